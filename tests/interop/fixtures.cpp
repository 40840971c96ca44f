// Writes the files the interop checks read (check_interop.py, test_interop_cli.sh):
//
//   fixtures models DIR          mlp.safetensors, images.f32 (100 x 784 synthetic digits),
//                                embedding.f32 (siam's 100 x 2), and with ONNX: mlp.onnx,
//                                mlp_nchw.onnx (input [batch, 1, 28, 28]),
//                                emitters_cnn.onnx, emitters_l2.onnx
//   fixtures embed ST IMAGES OUT loads ST (784-1024-1024-2) and writes the embeddings of IMAGES
//   fixtures l2 IN OUT DIR       loads the model file IN, appends an L2Normalize layer, saves
//                                it as OUT, and writes DIR/images.f32 (50 synthetic digits,
//                                50 x 784) and DIR/embedding.f32 (the new model's embeddings)
//   fixtures pngs DIR N SEED I   image I of synthetic_digits(N, SEED) as gray8.png, rgb.png,
//                                rgba.png, gray16.png, inverted.png, big.png (2x), and the
//                                hostile files empty.png, text.png, truncated.png, huge.png, ...
#include <siam/data/png.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/io/model_file.hpp>
#include <siam/io/safetensors.hpp>
#include <siam/siamese.hpp>
#if defined(SIAM_FIXTURES_ONNX)
#include <siam/io/onnx.hpp>
#endif

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../support/png_writer.hpp"

namespace fs = std::filesystem;
using Net = siam::nn::Sequential<float, siam::Cpu>;
const std::vector<siam::index_t> kLayers{784, 1024, 1024, 2};

static void write_floats(const fs::path& p, const std::vector<float>& v) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

static std::vector<float> read_floats(const fs::path& p) {
  const auto b = siam::io::read_file(p, "fixtures");
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

static std::vector<float> embed(Net& net, const std::vector<float>& images) {
  const auto n = static_cast<siam::index_t>(images.size() / 784);
  siam::Tape<float, siam::Cpu> tape;
  siam::NoGrad<float, siam::Cpu> no_grad(tape);
  const auto x =
      siam::Tensor<float, siam::Cpu>::from(siam::Shape{n, 784}, std::span<const float>(images));
  return net.forward(tape.constant(x)).value().to_vector();
}

static int models(const fs::path& dir) {
  fs::create_directories(dir);
  siam::Rng rng(7);
  auto net = siam::nn::mlp<float, siam::Cpu>(kLayers, rng);
  // Non-zero biases, so that a lost or misplaced bias shows in the embeddings.
  siam::Rng brng(8);
  for (auto* p : net.parameters())
    if (p->name == "b") {
      std::vector<float> v(static_cast<std::size_t>(p->value.size()));
      for (auto& x : v)
        x = static_cast<float>(brng.normal()) * 0.1f;
      siam::Cpu::from_host(p->value.data(), v.data(), p->value.size());
    }
  const auto digits = siam::data::synthetic_digits(100, 11);
  write_floats(dir / "images.f32", digits.images);
  write_floats(dir / "embedding.f32", embed(net, digits.images));
  siam::io::save_safetensors(dir / "mlp.safetensors", net);
#if defined(SIAM_FIXTURES_ONNX)
  siam::io::export_onnx(net, dir / "mlp.onnx");
  siam::io::OnnxOptions nchw;
  nchw.input_shape = {1, 28, 28};
  siam::io::export_onnx(net, dir / "mlp_nchw.onnx", nchw);
  // Every emitter, in two graphs (OpenCV 4.6's importer loses track of shapes after
  // MaxPool and then refuses the L2 normalisation's broadcast Div; ONNX itself accepts the
  // combination, see test_onnx):
  //   emitters_cnn.onnx [batch, 1, 8, 8] -> Conv 3x3 pad 1 (3 channels) -> Tanh -> MaxPool 2
  //                     -> Flatten (48) -> Dense 48x5 -> Sigmoid
  //   emitters_l2.onnx  [batch, 6] -> Dense 6x5 -> L2 normalise (eps) -> Dense 5x3 (no bias)
  //                     -> L2 normalise (no eps)
  auto random = [&](std::size_t n) {
    std::vector<float> v(n);
    for (auto& x : v)
      x = static_cast<float>(rng.normal()) * 0.5f;
    return v;
  };
  namespace e = siam::io::onnx_emit;
  auto save = [&](const char* name, std::vector<std::int64_t> in,
                  const std::function<std::string(siam::io::OnnxGraph&, std::string)>& body) {
    onnx::ModelProto m;
    m.set_ir_version(7);
    m.set_producer_name("siam");
    m.add_opset_import()->set_version(13);
    auto* g = m.mutable_graph();
    g->set_name(name);
    siam::io::OnnxGraph b(*g);
    const std::string x = body(b, b.fresh("images"));
    siam::io::onnx_value_info(*g->add_input(), "images", in);
    siam::io::onnx_value_info(*g->add_output(), x, {});
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim();
    std::string bytes;
    m.SerializeToString(&bytes);
    std::ofstream(dir / name, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  save("emitters_cnn.onnx", {1, 8, 8}, [&](siam::io::OnnxGraph& b, std::string x) {
    x = e::conv2d(b, x, random(3 * 1 * 3 * 3), 3, 1, 3, 3, random(3), 1, 1);
    x = e::activation(b, x, "Tanh");
    x = e::max_pool2d(b, x, 2, 2);
    x = e::flatten(b, x);
    x = e::dense(b, x, random(48 * 5), 48, 5, random(5));
    return e::activation(b, x, "Sigmoid");
  });
  save("emitters_l2.onnx", {6}, [&](siam::io::OnnxGraph& b, std::string x) {
    x = e::dense(b, x, random(6 * 5), 6, 5, random(5));
    x = e::l2_normalize(b, x, 1e-3f);
    x = e::dense(b, x, random(5 * 3), 5, 3, {});
    return e::l2_normalize(b, x, 0.0f);
  });
#endif
  return 0;
}

static int embed_file(const fs::path& st, const fs::path& images, const fs::path& out) {
  siam::Rng rng(0);
  auto net = siam::nn::mlp<float, siam::Cpu>(kLayers, rng);
  siam::io::load_safetensors(st, net);
  write_floats(out, embed(net, read_floats(images)));
  return 0;
}

static int l2_model(const fs::path& in, const fs::path& out, const fs::path& dir) {
  auto net = siam::io::load_model<float, siam::Cpu>(in);
  net.add<siam::nn::L2Normalize<float, siam::Cpu>>();
  siam::io::save_model(out, net);
  const auto digits = siam::data::synthetic_digits(50, 11);
  const auto x = siam::Tensor<float, siam::Cpu>::from(siam::Shape{50, 1, 28, 28},
                                                      std::span<const float>(digits.images));
  const auto e = net.embed(x);
  fs::create_directories(dir);
  write_floats(dir / "images.f32", digits.images);
  write_floats(dir / "embedding.f32", std::vector<float>(e.data(), e.data() + e.shape().size()));
  std::printf("%s\n", net.describe().c_str());
  return 0;
}

static int pngs(const fs::path& dir, std::size_t n, std::uint64_t seed, std::size_t index) {
  fs::create_directories(dir);
  const auto d = siam::data::synthetic_digits(n, seed);
  std::vector<unsigned> g, rgb, rgba, g16, inv, big(56 * 56);
  for (std::size_t i = 0; i < 784; ++i) {
    const auto v = static_cast<unsigned>(std::lround(d.image(index)[i] * 255.0f));
    g.push_back(v);
    rgb.insert(rgb.end(), {v, v, v});
    rgba.insert(rgba.end(), {v, v, v, 255});
    g16.push_back(v * 257);
    inv.push_back(255 - v);
  }
  for (std::size_t r = 0; r < 56; ++r)
    for (std::size_t c = 0; c < 56; ++c)
      big[r * 56 + c] = g[(r / 2) * 28 + c / 2];
  const auto gray8 = test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, g);
  test_png::write((dir / "gray8.png").string(), gray8);
  test_png::write((dir / "rgb.png").string(), test_png::encode(28, 28, PNG_COLOR_TYPE_RGB, 8, rgb));
  test_png::write((dir / "rgba.png").string(),
                  test_png::encode(28, 28, PNG_COLOR_TYPE_RGBA, 8, rgba));
  test_png::write((dir / "gray16.png").string(),
                  test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 16, g16));
  test_png::write((dir / "inverted.png").string(),
                  test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, inv));
  test_png::write((dir / "big.png").string(),
                  test_png::encode(56, 56, PNG_COLOR_TYPE_GRAY, 8, big));
  for (const auto& [name, bytes] : test_png::hostile(gray8))
    test_png::write((dir / name).string(), bytes);
  std::printf("label %u\n", static_cast<unsigned>(d.labels[index]));
  return 0;
}

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 2 && a[0] == "models") return models(a[1]);
    if (a.size() == 4 && a[0] == "embed") return embed_file(a[1], a[2], a[3]);
    if (a.size() == 4 && a[0] == "l2") return l2_model(a[1], a[2], a[3]);
    if (a.size() == 5 && a[0] == "pngs")
      return pngs(a[1], std::stoul(a[2]), std::stoull(a[3]), std::stoul(a[4]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(
      stderr,
      "usage: fixtures models DIR | embed ST IMAGES OUT | l2 IN OUT DIR | pngs DIR N SEED I\n");
  return 2;
}

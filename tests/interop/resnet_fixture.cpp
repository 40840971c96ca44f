// The siam side of check_resnet.py: a small nn::resnet (input [1 x 12 x 12], width 4,
// embedding 8) and its safetensors file with BatchNorm buffers.
//
//   resnet_fixture save DIR        trains the network in training mode on three batches (so
//                                  the running statistics and counts are not their initial
//                                  values), then writes DIR/specs.txt (nn::resnet_specs, one
//                                  layer per line), DIR/siam.safetensors, DIR/images.f32
//                                  (6 x 1 x 12 x 12), DIR/siam_embedding.f32 (inference mode)
//                                  and, where siam is built with ONNX export, DIR/resnet.onnx;
//                                  the last line of its output says which ("onnx: written" or
//                                  "onnx: not built")
//   resnet_fixture load DIR ST     builds the network afresh (another seed), loads ST, writes
//                                  DIR/loaded_embedding.f32 (of DIR/images.f32, inference
//                                  mode) and saves the loaded network as DIR/resaved.safetensors
#include <siam/io/safetensors.hpp>
#include <siam/siamese.hpp>
#if defined(SIAM_RESNET_FIXTURE_ONNX)
#include <siam/io/onnx.hpp>
#endif

#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Net = siam::nn::Sequential<float, siam::Cpu>;
const siam::Shape kInput{1, 12, 12};
constexpr siam::index_t kBatch = 6;

static void write_floats(const fs::path& p, const std::vector<float>& v) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

static std::vector<float> embed(Net& net, const std::vector<float>& images) {
  const auto x = siam::Tensor<float, siam::Cpu>::from(siam::Shape{kBatch, 1, 12, 12},
                                                      std::span<const float>(images));
  return siam::Tensor<float, siam::Cpu>(net.embed(x)).to_vector();
}

static std::vector<float> images(std::uint64_t seed) {
  siam::Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(kBatch * kInput.size()));
  for (auto& x : v)
    x = static_cast<float>(rng.normal());
  return v;
}

static int save(const fs::path& dir) {
  fs::create_directories(dir);
  siam::Rng rng(21);
  auto net = siam::nn::resnet<float, siam::Cpu>(kInput, rng, 4, 8);
  // Training-mode forwards update every BatchNorm's running statistics and count.
  for (std::uint64_t step = 0; step < 3; ++step) {
    siam::Tape<float, siam::Cpu> tape;
    const auto batch = images(100 + step);
    const auto x = siam::Tensor<float, siam::Cpu>::from(siam::Shape{kBatch, 1, 12, 12},
                                                        std::span<const float>(batch));
    (void)net.forward(tape.constant(x));
  }
  // Affine parameters away from 1 and 0, so a lost or swapped weight/bias shows.
  siam::Rng prng(22);
  for (auto* p : net.parameters())
    if (p->value.shape().rank() == 1) {
      std::vector<float> v(static_cast<std::size_t>(p->value.size()));
      for (auto& x : v)
        x = static_cast<float>(1.0 + 0.2 * prng.normal());
      siam::Cpu::from_host(p->value.data(), v.data(), p->value.size());
    }
  std::ofstream specs(dir / "specs.txt");
  for (const auto& s : siam::nn::resnet_specs(kInput, 4, 8))
    specs << s.str() << "\n";
  siam::io::save_safetensors(dir / "siam.safetensors", net);
  const auto x = images(7);
  write_floats(dir / "images.f32", x);
  write_floats(dir / "siam_embedding.f32", embed(net, x));
#if defined(SIAM_RESNET_FIXTURE_ONNX)
  siam::io::export_onnx(net, dir / "resnet.onnx");
  std::printf("onnx: written\n");
#else
  std::printf("onnx: not built\n");
#endif
  return 0;
}

static int load(const fs::path& dir, const fs::path& st) {
  siam::Rng rng(99);
  auto net = siam::nn::resnet<float, siam::Cpu>(kInput, rng, 4, 8);
  siam::io::load_safetensors(st, net);
  write_floats(dir / "loaded_embedding.f32", embed(net, images(7)));
  siam::io::save_safetensors(dir / "resaved.safetensors", net);
  return 0;
}

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "save" && argc == 3) return save(argv[2]);
    if (cmd == "load" && argc == 4) return load(argv[2], argv[3]);
    std::fprintf(stderr, "usage: resnet_fixture save DIR | load DIR FILE.safetensors\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet_fixture: %s\n", e.what());
    return 1;
  }
}

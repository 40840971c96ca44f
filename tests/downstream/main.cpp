// A downstream program, as a user would write it against the installed package:
//  1. the README's "Using the library" loop (a Siamese MLP, contrastive loss, Adam);
//  2. the general trainer on 3-class data with its own label values: a 20-64-64-3 network,
//     batch-hard triplet loss on P x K batches, AdamW with a cosine schedule; then the model
//     is saved, loaded back as a ready network and used to embed new inputs;
//  3. with siam::onnx (DOWNSTREAM_ONNX): a small network exported to ONNX in memory, whose
//     producer_version is the version find_package reported;
//  4. with siam::png (DOWNSTREAM_PNG): a PNG written here with libpng, read back by siam.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <siam/siamese.hpp>
#include <siam/train/trainer.hpp>
#include <string>
#include <vector>
#if defined(DOWNSTREAM_ONNX)
#include <siam/io/onnx.hpp>
#endif
#if defined(DOWNSTREAM_PNG)
#include <png.h>

#include <siam/data/png.hpp>
#endif

using namespace siam;

static int readme_loop() {
  Rng rng(1);
  auto net = nn::mlp<float, Cpu>({8, 16, 2}, rng);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-2});
  Tensor<float, Cpu> x(Shape{16, 8}), y(Shape{8});
  for (index_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(rng.uniform(-1, 1));
  for (index_t i = 0; i < 8; ++i)
    y[i] = static_cast<float>(i % 2);
  Tape<float, Cpu> tape;
  float first = 0, last = 0;
  for (int it = 0; it < 50; ++it) {
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(x));
    auto loss = contrastive_loss(slice_rows(f, 0, 8), slice_rows(f, 8, 8), tape.constant(y), {1.0});
    tape.backward(loss);
    adam.step();
    (it == 0 ? first : last) = loss.value().item();
  }
  std::printf("downstream: README loop, loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}

static int general_trainer() {
  // 300 points of 20 features around three centres, labelled 10, 20 and 30.
  Rng rng(2);
  std::vector<float> images;
  std::vector<std::int64_t> labels;
  std::vector<std::vector<float>> centre(3, std::vector<float>(20));
  for (auto& c : centre)
    for (auto& v : c)
      v = static_cast<float>(rng.uniform(-1, 1));
  for (std::size_t i = 0; i < 300; ++i) {
    labels.push_back(static_cast<std::int64_t>(10 * (i % 3 + 1)));
    for (std::size_t k = 0; k < 20; ++k)
      images.push_back(centre[i % 3][k] + static_cast<float>(rng.normal(0, 0.3)));
  }
  ImageSet<float, Cpu> set(images, labels, Shape{20});
  auto net = nn::mlp<float, Cpu>({20, 64, 64, 3}, rng);
  optim::AdamW<float, Cpu> opt(net.parameters(), {1e-2, 0.9, 0.999, 1e-8, 1e-4});
  PKBatches<float, Cpu> source(set, 3, 16, 7);
  TrainerOptions options;
  options.schedule = optim::CosineLR(1e-2, 200, 0, 10);
  Trainer<float, Cpu> trainer(net, opt, source, losses::batch_hard<float, Cpu>({0.5}), options);
  double first = 0, last = 0;
  for (int it = 0; it < 200; ++it)
    (it == 0 ? first : last) = trainer.step();
  std::printf("downstream: general trainer, batch-hard loss %.4f -> %.4f\n", first, last);

  const auto path = std::filesystem::temp_directory_path() / "siam_downstream_model.siam";
  io::save_model(path, net);
  auto loaded = io::load_model<float, Cpu>(path);
  std::filesystem::remove(path);
  // new inputs: one point at each centre
  Tensor<float, Cpu> fresh(Shape{3, 20});
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < 20; ++k)
      fresh(c, k) = centre[static_cast<std::size_t>(c)][static_cast<std::size_t>(k)];
  const auto a = net.embed(fresh).to_vector(), b = loaded.embed(fresh).to_vector();
  std::printf("downstream: loaded %s; embeddings %s\n", loaded.describe().c_str(),
              a == b ? "identical" : "DIFFER");
  return (last < first && a == b) ? 0 : 1;
}

static int onnx_export() {
#if defined(DOWNSTREAM_ONNX)
  Rng rng(3);
  auto net = nn::mlp<float, Cpu>({4, 3, 2}, rng);
  std::string bytes;
  io::to_onnx(net).SerializeToString(&bytes);
  onnx::ModelProto m;
  const bool parsed = m.ParseFromString(bytes);
  std::size_t gemms = 0;
  for (const auto& node : m.graph().node())
    gemms += node.op_type() == "Gemm";
  std::printf("downstream: ONNX export, %zu bytes, producer %s %s (package version %s), %zu Gemm\n",
              bytes.size(), m.producer_name().c_str(), m.producer_version().c_str(),
              DOWNSTREAM_SIAM_VERSION, gemms);
  return parsed && m.producer_name() == "siam" && m.producer_version() == DOWNSTREAM_SIAM_VERSION &&
                 gemms == 2
             ? 0
             : 1;
#else
  std::printf("downstream: ONNX export skipped (no siam::onnx)\n");
  return 0;
#endif
}

static int png_read() {
#if defined(DOWNSTREAM_PNG)
  // A 3 x 4 8-bit grey image, encoded in memory with libpng.
  const int rows = 3, cols = 4;
  std::vector<unsigned char> pixels(rows * cols), file;
  for (std::size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<unsigned char>(20 * i + 5);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::printf("downstream: libpng could not encode the image\n");
    return 1;
  }
  png_set_write_fn(
      png, &file,
      [](png_structp p, png_bytep d, png_size_t n) {
        auto* out = static_cast<std::vector<unsigned char>*>(png_get_io_ptr(p));
        out->insert(out->end(), d, d + n);
      },
      nullptr);
  png_set_IHDR(png, info, cols, rows, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int r = 0; r < rows; ++r)
    png_write_row(png, pixels.data() + r * cols);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);

  const auto img = data::read_png_gray(file.data(), file.size(), "downstream.png");
  double err = img.pixels.size() == pixels.size() ? 0 : 1;
  for (std::size_t i = 0; i < img.pixels.size() && i < pixels.size(); ++i)
    err = std::max(err, std::abs(static_cast<double>(img.pixels[i]) - pixels[i] / 255.0));
  std::printf("downstream: PNG read, %zu x %zu, max |difference| %.2g\n", img.rows, img.cols, err);
  return img.rows == rows && img.cols == cols && err < 1e-6 ? 0 : 1;
#else
  std::printf("downstream: PNG reading skipped (no siam::png)\n");
  return 0;
#endif
}

int main() {
  return readme_loop() | general_trainer() | onnx_export() | png_read();
}

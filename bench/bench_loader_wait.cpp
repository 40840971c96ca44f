// How long the training step waits for the streaming loader: a LeNet-style CNN (two 5x5
// convolutions, 3 x 64 x 64 input) trained on contrastive pairs from an image folder
// through FolderPairBatches with N worker threads. The wait is the time inside the
// source's next() (the loader's queue empty), the step the whole Trainer::step().
//
//   bench_loader_wait DIR [threads=1] [steps=40] [pairs=32]
//
// DIR/<class>/<file> holds PNG or JPEG images of any size; they are read as RGB, resized
// and centre cropped to 64 x 64. The first 3 steps (the queue filling) are not counted.
#include <siam/data/jpeg.hpp>
#include <siam/data/png.hpp>
#include <siam/siamese.hpp>
#include <siam/train/folder_batches.hpp>
#include <siam/train/siamese_trainer.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {
using Clock = std::chrono::steady_clock;
using T = float;
using B = siam::Cpu;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Times the inner source's next(): the step's wait for data.
class TimedSource final : public siam::BatchSource<T, B> {
 public:
  explicit TimedSource(siam::BatchSource<T, B>& inner) : inner_(inner) {}
  void next(siam::Batch<T, B>& b) override {
    const auto t0 = Clock::now();
    inner_.next(b);
    last_wait = since(t0);
  }
  siam::Rng& rng() override { return inner_.rng(); }
  std::string describe() const override { return inner_.describe(); }
  std::optional<siam::BatchLayout> layout() const override { return inner_.layout(); }
  double last_wait = 0;

 private:
  siam::BatchSource<T, B>& inner_;
};
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_loader_wait DIR [threads=1] [steps=40] [pairs=32]\n");
    return 2;
  }
  const std::size_t threads = argc > 2 ? std::stoul(argv[2]) : 1;
  const int steps = argc > 3 ? std::stoi(argv[3]) : 40;
  const std::size_t pairs = argc > 4 ? std::stoul(argv[4]) : 32;
  siam::data::ImageFolderOptions fo;
  fo.codecs = {siam::data::png_codec(), siam::data::jpeg_codec()};
  fo.channels = 3;
  fo.min_per_class = 2;
  fo.verify = false;
  const siam::data::ImageFolder folder(argv[1], fo);
  siam::data::TransformSpec spec;
  spec.size = 64;
  siam::FolderPairBatches<T, B> pairs_src(folder, spec, pairs, 1, {threads, 4});
  TimedSource source(pairs_src);

  siam::Rng rng(1);
  namespace nn = siam::nn;
  nn::Sequential<T, B> net;  // 3x64x64 -> 20x60x60 -> 20x30x30 -> 50x26x26 -> 50x13x13
  net.add<nn::Conv2D<T, B>>(3, 20, 5, rng, 1, 0, true, nn::Init::he)
      .add<nn::ReLU<T, B>>()
      .add<nn::MaxPool2D<T, B>>(2, 2)
      .add<nn::Conv2D<T, B>>(20, 50, 5, rng, 1, 0, true, nn::Init::he)
      .add<nn::ReLU<T, B>>()
      .add<nn::MaxPool2D<T, B>>(2, 2)
      .add<nn::Flatten<T, B>>()
      .add<nn::Dense<T, B>>(50 * 13 * 13, 500, rng, nn::Init::he)
      .add<nn::ReLU<T, B>>()
      .add<nn::Dense<T, B>>(500, 2, rng, nn::Init::he);
  net.set_input_shape(siam::Shape{3, 64, 64});
  siam::optim::Adam<T, B> adam(net.parameters(), {1e-4, 0.9, 0.999, 1e-8});
  siam::Trainer<T, B> trainer(net, adam, source, siam::losses::contrastive<T, B>(), {});

  double wait = 0, step = 0, max_wait = 0;
  for (int s = 0; s < steps + 3; ++s) {
    const auto t0 = Clock::now();
    trainer.step();
    const double dt = since(t0);
    if (s < 3) continue;
    step += dt;
    wait += source.last_wait;
    max_wait = std::max(max_wait, source.last_wait);
  }
  std::printf(
      "%zu images, %zu worker thread(s), %d steps of %zu pairs (3x64x64): step %.2f ms, "
      "wait for data %.3f ms (max %.3f ms), wait fraction %.2f%%\n",
      folder.size(), threads, steps, pairs, 1e3 * step / steps, 1e3 * wait / steps, 1e3 * max_wait,
      100 * wait / step);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}

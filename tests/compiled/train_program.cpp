// The downstream training program whose compile time and compiler memory
// scripts/compile-time.sh measures (docs/compile-time.md): what a user writes first, a
// Siamese MLP and a LeNet trained a few steps with the general trainer, then saved. It
// prints a checksum of the final weights so that a build against the compiled component
// (siam::compiled) can be compared with the header-only build bit for bit.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <siam/siamese.hpp>
#include <siam/train/trainer.hpp>
#include <vector>
#if defined(TRAIN_PROGRAM_COMPILED)
#include <siam/compiled.hpp>  // with siam::compiled: the common types come from the library
#endif

using namespace siam;

// FNV-1a over the bytes of every parameter: equal sums mean bit-identical weights.
static std::uint64_t weights_hash(nn::Sequential<float, Cpu>& net) {
  std::uint64_t h = 1469598103934665603ull;
  for (auto* p : net.parameters())
    for (float v : p->value.to_vector()) {
      unsigned char b[sizeof(float)];
      std::memcpy(b, &v, sizeof v);
      for (unsigned char c : b)
        h = (h ^ c) * 1099511628211ull;
    }
  return h;
}

static std::uint64_t train(nn::Sequential<float, Cpu> net, const ImageSet<float, Cpu>& set,
                           const char* name, const std::filesystem::path& out) {
  optim::Adam<float, Cpu> opt(net.parameters(), {1e-3});
  PKBatches<float, Cpu> batches(set, 4, 4, 1);
  Trainer<float, Cpu> trainer(net, opt, batches, losses::batch_hard<float, Cpu>({0.2}));
  double first = 0, last = 0;
  for (int it = 0; it < 5; ++it)
    (it == 0 ? first : last) = trainer.step();
  io::save_model(out / (std::string(name) + ".siam"), net);
  const auto h = weights_hash(net);
  std::printf("%s: loss %.6f -> %.6f, weights %016llx\n", name, first, last,
              static_cast<unsigned long long>(h));
  return h;
}

int main(int argc, char** argv) {
  const std::filesystem::path out = argc > 1 ? argv[1] : std::filesystem::temp_directory_path();
  Rng rng(0);
  std::vector<float> images;
  std::vector<std::int64_t> labels;
  for (int i = 0; i < 64; ++i) {
    labels.push_back(i % 4);
    for (int k = 0; k < 28 * 28; ++k)
      images.push_back(static_cast<float>(rng.uniform(0, 1)) * static_cast<float>(1 + i % 4));
  }
  ImageSet<float, Cpu> flat(images, labels, Shape{28 * 28});
  ImageSet<float, Cpu> square(images, labels, Shape{1, 28, 28});
  train(nn::mlp<float, Cpu>({28 * 28, 64, 32, 8}, rng), flat, "mlp", out);
  train(nn::build<float, Cpu>(presets::lenet_specs(8), Shape{1, 28, 28}, rng), square, "lenet",
        out);
  return 0;
}

// Decoding and resizing throughput on a folder of JPEG files (bench/compare_images.py runs
// it next to OpenCV and PyTorch's DataLoader on the same files):
//   bench_images DIR THREADS SIZE SECONDS [dct]
// Each of THREADS threads reads its share of the files (bytes held in memory, as the
// others read them), decodes them as RGB (libjpeg-turbo, read_jpeg_into: one image buffer
// per thread) and transforms them as a loader does for evaluation (apply_transform: shorter
// side to SIZE, antialiased bilinear, centre crop, into float channel planes), round after
// round until SECONDS have passed. With "dct" the decoder shrinks inside the inverse DCT
// first (min_side SIZE: a 64 x 64 file decodes to 32 x 32 for SIZE 32). Prints
// "images_per_s N".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <siam/data/jpeg.hpp>
#include <siam/data/transforms.hpp>
#include <siam/io/file.hpp>
#include <siam/random.hpp>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: bench_images DIR THREADS SIZE SECONDS [dct]\n");
    return 2;
  }
  std::vector<std::vector<std::uint8_t>> files;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    if (e.path().extension() == ".jpg") files.push_back(siam::io::read_file(e.path(), "bench"));
  const auto threads = static_cast<std::size_t>(std::atoi(argv[2]));
  const auto size = static_cast<std::size_t>(std::atoi(argv[3]));
  const double seconds = std::atof(argv[4]);
  const bool dct = argc == 6 && std::string(argv[5]) == "dct";
  if (files.empty() || threads == 0 || size == 0) return 2;
  siam::data::TransformSpec spec;
  spec.size = size;
  std::atomic<bool> stop{false};
  std::vector<std::size_t> done(threads, 0);
  std::vector<float> sink(threads, 0.0f);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      siam::data::Image img;
      siam::Rng rng(t);
      std::vector<float> out(3 * size * size);
      siam::data::DecodeLimits limits;
      limits.min_side = dct ? size : 0;
      for (std::size_t i = t; !stop.load(std::memory_order_relaxed); i += threads) {
        const auto& b = files[i % files.size()];
        siam::data::read_jpeg_into(img, b.data(), b.size(), "bench.jpg", 3, limits);
        siam::data::apply_transform(img, spec, rng, out.data());
        sink[t] += out[0];
        ++done[t];
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool)
    th.join();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::size_t n = 0;
  for (auto d : done)
    n += d;
  std::printf("images_per_s %.1f\n", static_cast<double>(n) / dt);
  return sink[0] == -1.0f ? 1 : 0;
}

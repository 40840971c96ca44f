// libFuzzer target: the JPEG reader (libjpeg-turbo), every channel request, with a pixel
// limit that keeps a forged header from reaching the fuzzer's memory limit. Every input
// must either decode or be rejected with siam::io_error; anything else (a crash, a
// sanitizer report, another exception, an allocation above the limit) is a finding.
// Built with `main` instead when FUZZ_JPEG_SEEDS is defined: it then writes the seed
// corpus (small valid JPEGs of each kind, and truncations) into the folder argv[1].
#include <turbojpeg.h>

#include <cstddef>
#include <cstdint>
#include <siam/data/jpeg.hpp>
#include <string>

#ifndef FUZZ_JPEG_SEEDS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  siam::data::DecodeLimits limits;
  limits.max_pixels = 1u << 20;  // 4 MiB of RGBA at most
  for (std::size_t ch : {0u, 1u, 3u}) {
    try {
      const auto img = siam::data::read_jpeg(data, size, "fuzz.jpg", ch, limits);
      if (img.pixels.size() != img.rows * img.cols * img.channels) __builtin_trap();
    } catch (const siam::io_error&) {
    }
  }
  return 0;
}
#else
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_jpeg_seeds DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  struct Kind {
    int ch, subsamp, flags;
  };
  const Kind kinds[] = {{1, TJSAMP_GRAY, 0},
                        {3, TJSAMP_444, 0},
                        {3, TJSAMP_420, 0},
                        {3, TJSAMP_422, TJFLAG_PROGRESSIVE}};
  int n = 0;
  for (const auto& k : kinds) {
    const int w = 13 + n, h = 9 + 2 * n;
    std::vector<unsigned char> px(static_cast<std::size_t>(w * h * k.ch));
    for (std::size_t i = 0; i < px.size(); ++i)
      px[i] = static_cast<unsigned char>((i * 37 + static_cast<std::size_t>(n) * 11) % 251);
    tjhandle tj = tjInitCompress();
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    if (tjCompress2(tj, px.data(), w, 0, h, k.ch == 1 ? TJPF_GRAY : TJPF_RGB, &buf, &size,
                    k.subsamp, 75, k.flags) != 0) {
      std::fprintf(stderr, "fuzz_jpeg_seeds: %s\n", tjGetErrorStr2(tj));
      return 1;
    }
    for (unsigned long cut : {size, size / 2, size / 5}) {
      std::ofstream(dir / ("seed" + std::to_string(n) + "_" + std::to_string(cut) + ".jpg"),
                    std::ios::binary)
          .write(reinterpret_cast<const char*>(buf), static_cast<std::streamsize>(cut));
    }
    tjFree(buf);
    tjDestroy(tj);
    ++n;
  }
  return 0;
}
#endif

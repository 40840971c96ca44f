// Writes siam's image results for tests/interop/check_images.py to compare with OpenCV and
// PyTorch: resize cases (input and output as float32) and a JPEG file with siam's decode.
//   images_fixture DIR
// DIR/resize_N.bin: uint32 rows, cols, channels, out_rows, out_cols, filter (0 bilinear,
// 1 area), then the input and the output (float32, rows x cols x channels interleaved).
// DIR/photo.jpg and DIR/photo.rgb: a JPEG and siam's RGB decode of it (8-bit samples).
#include <turbojpeg.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <siam/data/jpeg.hpp>
#include <siam/data/transforms.hpp>
#include <siam/random.hpp>
#include <string>
#include <vector>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: images_fixture DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  struct Case {
    std::uint32_t rows, cols, ch, out_rows, out_cols, filter;
  };
  const Case cases[] = {
      {7, 5, 3, 16, 11, 0},                           // enlargement: plain bilinear
      {40, 30, 1, 13, 9, 0},                          // shrink: antialiased
      {33, 64, 3, 20, 17, 0}, {40, 30, 3, 13, 9, 1},  // area, non-integer factor
      {32, 24, 1, 8, 6, 1},                           // area, integer factor
      {64, 64, 3, 64, 20, 1},
  };
  siam::Rng rng(5);
  int n = 0;
  for (const auto& c : cases) {
    siam::data::FloatImage img{c.rows, c.cols, c.ch, {}};
    for (std::size_t i = 0; i < std::size_t{c.rows} * c.cols * c.ch; ++i)
      img.pixels.push_back(static_cast<float>(rng.below(256)) / 255.0f);
    const auto out =
        siam::data::resize(img, c.out_rows, c.out_cols,
                           c.filter ? siam::data::Filter::area : siam::data::Filter::bilinear);
    std::ofstream f(dir / ("resize_" + std::to_string(n++) + ".bin"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(&c), sizeof c);
    f.write(reinterpret_cast<const char*>(img.pixels.data()),
            static_cast<std::streamsize>(img.pixels.size() * sizeof(float)));
    f.write(reinterpret_cast<const char*>(out.pixels.data()),
            static_cast<std::streamsize>(out.pixels.size() * sizeof(float)));
  }
  // A 4:2:0 JPEG of a smooth picture with an edge, and siam's decode of it.
  const int w = 48, h = 36;
  std::vector<unsigned char> px;
  for (int r = 0; r < h; ++r)
    for (int x = 0; x < w; ++x) {
      px.push_back(static_cast<unsigned char>(x < 20 ? 40 + 3 * r : 200 - 2 * x));
      px.push_back(static_cast<unsigned char>(30 + 4 * x));
      px.push_back(static_cast<unsigned char>(r * 6));
    }
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 85, 0) != 0) return 1;
  std::vector<unsigned char> jpeg(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  std::ofstream(dir / "photo.jpg", std::ios::binary)
      .write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
  const auto img = siam::data::read_jpeg(dir / "photo.jpg", 3);
  std::ofstream(dir / "photo.rgb", std::ios::binary)
      .write(reinterpret_cast<const char*>(img.pixels.data()),
             static_cast<std::streamsize>(img.pixels.size()));
  return 0;
}

// A minimal libpng writer for tests: 8/16-bit grey, grey+alpha, RGB, RGBA and palette
// images (optionally interlaced), so the reader is checked on every colour type.
#pragma once

#include <png.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace test_png {

/// samples: rows * cols * channels values in [0, 2^bit_depth). For PNG_COLOR_TYPE_PALETTE,
/// samples are palette indices and `palette` holds the RGB entries.
inline std::vector<unsigned char> encode(int rows, int cols, int color_type, int bit_depth,
                                         const std::vector<unsigned>& samples,
                                         const std::vector<png_color>& palette = {},
                                         bool interlace = false) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<unsigned char> out;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("test_png::encode failed");
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep d, png_size_t n) {
        auto* o = static_cast<std::vector<unsigned char>*>(png_get_io_ptr(p));
        o->insert(o->end(), d, d + n);
      },
      nullptr);
  png_set_IHDR(png, info, static_cast<png_uint_32>(cols), static_cast<png_uint_32>(rows), bit_depth,
               color_type, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE)
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  const int channels = color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_PALETTE ? 1
                       : color_type == PNG_COLOR_TYPE_GRAY_ALPHA                                 ? 2
                       : color_type == PNG_COLOR_TYPE_RGB                                        ? 3
                                                          : 4;
  const std::size_t row_samples = static_cast<std::size_t>(cols) * channels;
  const std::size_t row_bytes = (row_samples * bit_depth + 7) / 8;
  std::vector<unsigned char> image(row_bytes * static_cast<std::size_t>(rows), 0);
  for (int r = 0; r < rows; ++r) {
    unsigned char* row = image.data() + row_bytes * r;
    for (std::size_t i = 0; i < row_samples; ++i) {
      const unsigned v = samples.at(r * row_samples + i);
      if (bit_depth == 16) {
        row[2 * i] = static_cast<unsigned char>(v >> 8);
        row[2 * i + 1] = static_cast<unsigned char>(v & 0xff);
      } else if (bit_depth == 8) {
        row[i] = static_cast<unsigned char>(v);
      } else {  // 1, 2 or 4 bits, most significant first
        const std::size_t bit = i * bit_depth;
        row[bit / 8] |= static_cast<unsigned char>(v << (8 - bit_depth - bit % 8));
      }
    }
  }
  std::vector<png_bytep> rp(rows);
  for (int r = 0; r < rows; ++r)
    rp[r] = image.data() + row_bytes * r;
  png_write_image(png, rp.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

inline void write(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

/// The hostile files every PNG reader must refuse: name and bytes.
inline std::vector<std::pair<std::string, std::vector<unsigned char>>> hostile(
    const std::vector<unsigned char>& valid) {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> h;
  h.push_back({"empty.png", {}});
  const std::string text = "this is not a PNG image\n";
  h.push_back({"text.png", {text.begin(), text.end()}});
  h.push_back(
      {"truncated.png", {valid.begin(), valid.begin() + static_cast<long>(valid.size() / 2)}});
  // A valid signature and IHDR (with its CRC) claiming 100000 x 100000 pixels, then nothing.
  std::vector<unsigned char> huge = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                     0,    0,   0,   13,  'I',  'H',  'D',  'R'};
  auto be32 = [&](std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8)
      huge.push_back(static_cast<unsigned char>(v >> s));
  };
  be32(100000);
  be32(100000);
  huge.insert(huge.end(), {8, 0, 0, 0, 0});
  be32(static_cast<std::uint32_t>(crc32(0, huge.data() + 12, 17)));
  h.push_back({"huge.png", huge});
  // The same header at 4000 x 4000 (under the side limit) with a tiny file.
  std::vector<unsigned char> big(huge.begin(), huge.begin() + 16);
  std::swap(huge, big);
  be32(4000);
  be32(4000);
  huge.insert(huge.end(), {8, 0, 0, 0, 0});
  be32(static_cast<std::uint32_t>(crc32(0, huge.data() + 12, 17)));
  std::swap(huge, big);
  h.push_back({"bomb.png", big});
  auto corrupt = valid;
  for (std::size_t i = 40; i < corrupt.size() && i < 60; ++i)
    corrupt[i] ^= 0x5a;
  h.push_back({"corrupt.png", corrupt});
  return h;
}

}  // namespace test_png

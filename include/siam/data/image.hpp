// A decoded image in plain memory (8-bit samples, rows x cols x channels, interleaved) and
// what every decoder shares: the channel request, the pixel limit checked before any
// allocation, and the codec record an image folder dispatches on. Dependency-free: the
// decoders themselves live behind their own headers (siam/data/png.hpp: libpng,
// siam/data/jpeg.hpp: libjpeg-turbo).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "siam/error.hpp"

namespace siam::data {

/// rows x cols pixels of `channels` 8-bit samples each, row-major, row 0 at the top,
/// samples interleaved (grey; grey, alpha; R, G, B; R, G, B, alpha).
struct Image {
  std::size_t rows = 0, cols = 0, channels = 0;
  std::vector<std::uint8_t> pixels;

  std::uint8_t at(std::size_t r, std::size_t c, std::size_t ch) const {
    return pixels[(r * cols + c) * channels + ch];
  }
};

/// A grey image: rows x cols values in [0, 1], row-major, row 0 at the top.
struct GrayImage {
  std::size_t rows = 0, cols = 0;
  std::vector<float> pixels;
};

/// What a decoder may allocate: an image whose header claims more than max_pixels pixels
/// (rows x cols) is refused with an io_error before its pixels are allocated. And how far
/// it may shrink while decoding: min_side > 0 lets a decoder that can (JPEG, by k/8 inside its
/// inverse DCT) return a smaller image whose shorter side is still at least
/// min_side; others ignore it.
struct DecodeLimits {
  std::uint64_t max_pixels = std::uint64_t{1} << 26;  ///< 67,108,864 = 8192 x 8192
  std::size_t min_side = 0;                           ///< 0: full size
};

/// A decoder for one file format: `sniff` recognises the format from the file's first
/// bytes; `decode` turns the whole file into an Image with `channels` samples per pixel
/// (0: the file's own), throwing io_error that names `name` on any bad data.
struct ImageCodec {
  std::string format;  ///< "PNG", "JPEG"
  std::function<bool(const std::uint8_t*, std::size_t)> sniff;
  std::function<Image(const std::uint8_t*, std::size_t, const std::string& name,
                      std::size_t channels, const DecodeLimits&)>
      decode;
};

namespace detail {

/// Throws io_error naming the file when a rows x cols image is above the limit.
inline void check_pixel_limit(std::uint64_t rows, std::uint64_t cols, const DecodeLimits& limits,
                              const std::string& name, const char* format) {
  if (rows == 0 || cols == 0)
    throw io_error(name + ": the " + format + " header claims an empty image (" +
                   std::to_string(cols) + " x " + std::to_string(rows) + " pixels)");
  if (rows > limits.max_pixels / cols)
    throw io_error(name + ": the " + format + " header claims " + std::to_string(cols) + " x " +
                   std::to_string(rows) + " pixels, above the limit of " +
                   std::to_string(limits.max_pixels) + " pixels (DecodeLimits::max_pixels)");
}

inline void check_channel_request(std::size_t channels, const std::string& name) {
  if (channels > 4)
    throw value_error(name + ": " + std::to_string(channels) +
                      " channels requested; an image has 0 (as stored), 1, 2, 3 or 4");
}

}  // namespace detail

}  // namespace siam::data

// Reading PNG files through libpng: read_png decodes any PNG to 8-bit grey, grey + alpha,
// RGB or RGBA (an Image, see siam/data/image.hpp; png_codec() for image folders), and
// read_png_gray to grey values in [0, 1] (a GrayImage; presets/mnist_digit.hpp prepares
// one as a training-style digit). Both go through one libpng read (detail::png_decode_any).
// Optional: needs libpng (CMake: siam::png); the umbrella header does not include it.
//
// Any PNG decodes: 1-16 bit grey, RGB, palette, with or without alpha or tRNS, interlaced
// or not. Colour becomes grey with libpng's Rec. 709 weights (grey stays exact), 16-bit
// samples are scaled to 8 bits.
//
// Hostile files are rejected with an io_error naming the file before any large
// allocation: empty, not a PNG, truncated or corrupt data, more pixels than the limits
// allow, or a header claiming more pixels than the file's compressed size could hold.
#pragma once

#include <png.h>

#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/data/image.hpp"
#include "siam/error.hpp"
#include "siam/io/file.hpp"

namespace siam::data {

/// The largest width or height read_png_gray accepts (larger images are refused, not scaled).
inline constexpr std::uint32_t png_max_side = 4096;

namespace detail {

struct PngState {  // everything the setjmp frame touches lives here, not in its locals
  const unsigned char* data = nullptr;
  std::size_t size = 0, pos = 0;
  char message[256] = {};
  std::vector<unsigned char> ga;  // the decoded samples, interleaved
  std::vector<png_bytep> rows;
  png_uint_32 width = 0, height = 0;
};

inline void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > s->size - s->pos) png_error(png, "the file is truncated");
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

inline void png_on_error(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof s->message, "%s", msg);
  png_longjmp(png, 1);
}

inline void png_on_warning(png_structp, png_const_charp) {}

inline std::uint32_t png_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

/// The one libpng read: decodes into s.ga as `want` samples per pixel (0: the file's own: grey 1,
/// grey + alpha 2, RGB 3, RGBA 4); s.width x s.height was checked against the limits by the caller.
/// Returns false (s.message set) on a libpng error.
inline bool png_decode_any(png_structp png, png_infop info, PngState& s, std::size_t asked,
                           std::size_t* got) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu);
  png_set_chunk_malloc_max(png, 8u << 20);
  png_set_read_fn(png, &s, png_read_mem);
  png_read_info(png, info);
  int bit_depth = 0, color = 0, interlace = 0;
  png_get_IHDR(png, info, &s.width, &s.height, &bit_depth, &color, &interlace, nullptr, nullptr);
  const bool trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
  const bool colour = (color & PNG_COLOR_MASK_COLOR) != 0;
  const bool alpha = (color & PNG_COLOR_MASK_ALPHA) != 0 || trns;
  // (A new constant, not an assignment to the parameter: a variable written after setjmp
  // may be clobbered by the longjmp.)
  const std::size_t want = asked != 0 ? asked : (colour ? 3u : 1u) + (alpha ? 1u : 0u);
  const bool want_colour = want >= 3, want_alpha = want == 2 || want == 4;
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (trns) png_set_tRNS_to_alpha(png);
  if (bit_depth == 16) png_set_scale_16(png);
  if (colour && !want_colour) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
  if (!colour && want_colour) png_set_gray_to_rgb(png);
  if (alpha && !want_alpha) png_set_strip_alpha(png);
  if (!alpha && want_alpha) png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != want * static_cast<png_size_t>(s.width)) {
    std::snprintf(s.message, sizeof s.message, "unexpected row layout after conversion");
    return false;
  }
  s.ga.resize(want * static_cast<std::size_t>(s.width) * s.height);
  s.rows.resize(s.height);
  for (png_uint_32 r = 0; r < s.height; ++r)
    s.rows[r] = s.ga.data() + want * static_cast<std::size_t>(s.width) * r;
  png_read_image(png, s.rows.data());
  png_read_end(png, nullptr);
  *got = want;
  return true;
}

}  // namespace detail

/// Decodes a PNG held in memory to 8-bit samples, `channels` per pixel: 1 grey, 2 grey +
/// alpha, 3 RGB, 4 RGBA, 0 as stored. Colour becomes grey with libpng's Rec. 709 weights,
/// grey is copied into R, G and B, alpha is dropped or added as opaque, 16-bit samples are
/// scaled to 8 bits, palettes and tRNS are expanded. Throws io_error naming `name` when the
/// data is empty, not a PNG, truncated or corrupt, or when its header claims more pixels
/// than `limits` allow or than its compressed size could hold (both before allocating).
inline Image read_png(const std::uint8_t* data, std::size_t size, const std::string& name,
                      std::size_t channels = 0, const DecodeLimits& limits = {}) {
  detail::check_channel_request(channels, name);
  if (size == 0) throw io_error(name + ": empty file (0 bytes), not a PNG image");
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0)
    throw io_error(name + ": not a PNG image (no PNG signature)");
  if (size < 33 || std::memcmp(data + 12, "IHDR", 4) != 0)
    throw io_error(name + ": truncated or corrupt PNG (no IHDR chunk at its start)");
  const std::uint32_t w = detail::png_be32(data + 16), h = detail::png_be32(data + 20);
  detail::check_pixel_limit(h, w, limits, name, "PNG");
  // Deflate compresses at most ~1032:1: a header claiming more raw bytes than that lies.
  const int bits = data[24], color = data[25];
  const int stored = color == 2 ? 3 : color == 4 ? 2 : color == 6 ? 4 : 1;
  const double raw =
      static_cast<double>(h) * (1.0 + std::ceil(static_cast<double>(w) * stored * bits / 8.0));
  if (raw > 1100.0 * static_cast<double>(size) + 65536.0)
    throw io_error(name + ": the PNG header claims " + std::to_string(w) + " x " +
                   std::to_string(h) + " pixels, more than a file of " + std::to_string(size) +
                   " bytes can hold (truncated or forged)");
  detail::PngState s;
  s.data = data;
  s.size = size;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, detail::png_on_error,
                                           detail::png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw io_error(name + ": libpng could not be initialised");
  }
  std::size_t got = 0;
  const bool ok = detail::png_decode_any(png, info, s, channels, &got);
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok) throw io_error(name + ": unreadable PNG: " + s.message);
  Image img;
  img.rows = s.height;
  img.cols = s.width;
  img.channels = got;
  img.pixels = std::move(s.ga);
  return img;
}

/// Reads a PNG file (see read_png above). Throws io_error naming the file.
inline Image read_png(const std::filesystem::path& path, std::size_t channels = 0,
                      const DecodeLimits& limits = {}) {
  const auto bytes = io::read_file(path, "read_png");
  return read_png(bytes.data(), bytes.size(), path.string(), channels, limits);
}

/// The PNG codec for image folders (siam/data/image_folder.hpp).
inline ImageCodec png_codec() {
  return ImageCodec{
      "PNG",
      [](const std::uint8_t* d, std::size_t n) { return n >= 8 && png_sig_cmp(d, 0, 8) == 0; },
      [](const std::uint8_t* d, std::size_t n, const std::string& name, std::size_t ch,
         const DecodeLimits& lim) { return read_png(d, n, name, ch, lim); }};
}

/// Decodes a PNG held in memory to grey values in [0, 1] (read_png's grey + alpha, with
/// transparent pixels laid on the background that contrasts with the alpha-weighted ink:
/// white under dark ink, black under light ink); `name` labels errors. Throws io_error as
/// read_png does, and for a side above png_max_side.
inline GrayImage read_png_gray(const std::uint8_t* data, std::size_t size,
                               const std::string& name) {
  // The IHDR's sides, read before libpng allocates anything, for a message naming them.
  if (size >= 26 && png_sig_cmp(data, 0, 8) == 0 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    const std::uint32_t w = detail::png_be32(data + 16), h = detail::png_be32(data + 20);
    if (w > png_max_side || h > png_max_side)
      throw io_error(name + ": the image is " + std::to_string(w) + " x " + std::to_string(h) +
                     " pixels; siam reads PNGs up to " + std::to_string(png_max_side) + " x " +
                     std::to_string(png_max_side));
  }
  const Image ga =
      read_png(data, size, name, 2, DecodeLimits{std::uint64_t{png_max_side} * png_max_side, 0});
  GrayImage img;
  img.rows = ga.rows;
  img.cols = ga.cols;
  const std::size_t n = img.rows * img.cols;
  const auto& p = ga.pixels;
  double ink = 0, weight = 0;
  for (std::size_t i = 0; i < n; ++i) {
    ink += p[2 * i] * static_cast<double>(p[2 * i + 1]);
    weight += p[2 * i + 1];
  }
  const double background = weight > 0 && ink / weight < 127.5 ? 255.0 : 0.0;
  img.pixels.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double a = p[2 * i + 1] / 255.0;
    img.pixels[i] = static_cast<float>((p[2 * i] * a + background * (1 - a)) / 255.0);
  }
  return img;
}

/// Reads a PNG file (see read_png_gray above). Throws io_error naming the file.
inline GrayImage read_png_gray(const std::filesystem::path& path) {
  const auto bytes = io::read_file(path, "read_png");
  return read_png_gray(bytes.data(), bytes.size(), path.string());
}

}  // namespace siam::data

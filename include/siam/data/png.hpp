// Reading PNG files through libpng: read_png decodes any PNG to 8-bit grey, grey + alpha,
// RGB or RGBA (an Image, see siam/data/image.hpp; png_codec() for image folders), and
// read_png_gray / load_digit_png read a digit the way the training images look: 28 x 28
// grey values in [0, 1], white ink on black, quantised to k / 255 like MNIST.
// Optional: needs libpng (CMake: siam::png); the umbrella header does not include it.
//
// Any PNG decodes: 1-16 bit grey, RGB, palette, with or without alpha or tRNS, interlaced
// or not. Colour becomes grey with libpng's Rec. 709 weights (grey stays exact), 16-bit
// samples are scaled to 8 bits, and transparent pixels are laid on the background that
// contrasts with the ink (white under dark ink, black under light ink).
//
// Hostile files are rejected with an io_error naming the file before any large
// allocation: empty, not a PNG, truncated or corrupt data, sides above png_max_side, or a
// header claiming more pixels than the file's compressed size could hold.
#pragma once

#include <png.h>

#include <algorithm>
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

/// A grey image: rows x cols values in [0, 1], row-major, row 0 at the top.
struct GrayImage {
  std::size_t rows = 0, cols = 0;
  std::vector<float> pixels;
};

/// The largest width or height read_png_gray accepts (larger images are refused, not scaled).
inline constexpr std::uint32_t png_max_side = 4096;

/// Ink polarity: `automatic` inverts when the image's border is mostly light (dark ink on a
/// light background), `yes` always inverts, `no` never does.
enum class Invert { automatic, yes, no };

namespace detail {

struct PngState {  // everything the setjmp frame touches lives here, not in its locals
  const unsigned char* data = nullptr;
  std::size_t size = 0, pos = 0;
  char message[256] = {};
  std::vector<unsigned char> ga;  // grey + alpha, 8 bits each
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

/// Decodes into s.ga. Returns false (s.message set) on a libpng error. Only plain data
/// lives in this frame, so the longjmp skips no destructor.
inline bool png_decode_ga(png_structp png, png_infop info, PngState& s) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_user_limits(png, png_max_side, png_max_side);
  png_set_chunk_malloc_max(png, 8u << 20);
  png_set_read_fn(png, &s, png_read_mem);
  png_read_info(png, info);
  int bit_depth = 0, color = 0, interlace = 0;
  png_get_IHDR(png, info, &s.width, &s.height, &bit_depth, &color, &interlace, nullptr, nullptr);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth == 16) png_set_scale_16(png);
  if (color & PNG_COLOR_MASK_COLOR) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
  if (!(color & PNG_COLOR_MASK_ALPHA) && !png_get_valid(png, info, PNG_INFO_tRNS))
    png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != 2 * static_cast<png_size_t>(s.width)) {
    std::snprintf(s.message, sizeof s.message, "unexpected row layout after conversion");
    return false;
  }
  s.ga.resize(2 * static_cast<std::size_t>(s.width) * s.height);
  s.rows.resize(s.height);
  for (png_uint_32 r = 0; r < s.height; ++r)
    s.rows[r] = s.ga.data() + 2 * static_cast<std::size_t>(s.width) * r;
  png_read_image(png, s.rows.data());
  png_read_end(png, nullptr);
  return true;
}

/// Decodes into s.ga as `want` samples per pixel (0: the file's own: grey 1, grey + alpha 2,
/// RGB 3, RGBA 4); s.width x s.height was checked against the limits by the caller.
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

/// Output sample k of n_out covers [k, k + 1) * n_in / n_out of the input: the area average.
inline std::vector<float> resample_area(const std::vector<float>& in, std::size_t rows,
                                        std::size_t cols, std::size_t out_rows,
                                        std::size_t out_cols) {
  auto weights = [](std::size_t n_in, std::size_t n_out) {
    std::vector<float> w(n_out * n_in, 0.0f);  // small: the output is at most 20 wide
    const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
    for (std::size_t k = 0; k < n_out; ++k) {
      const double a = static_cast<double>(k) * scale, b = a + scale;
      for (auto i = static_cast<std::size_t>(a); i < n_in && static_cast<double>(i) < b; ++i) {
        const double lo = std::max(a, static_cast<double>(i)),
                     hi = std::min(b, static_cast<double>(i + 1));
        w[k * n_in + i] = static_cast<float>((hi - lo) / scale);
      }
    }
    return w;
  };
  const auto wr = weights(rows, out_rows), wc = weights(cols, out_cols);
  std::vector<float> tmp(rows * out_cols, 0.0f), out(out_rows * out_cols, 0.0f);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t k = 0; k < out_cols; ++k)
      for (std::size_t c = 0; c < cols; ++c)
        tmp[r * out_cols + k] += wc[k * cols + c] * in[r * cols + c];
  for (std::size_t k = 0; k < out_rows; ++k)
    for (std::size_t r = 0; r < rows; ++r)
      if (const float w = wr[k * rows + r]; w != 0.0f)
        for (std::size_t c = 0; c < out_cols; ++c)
          out[k * out_cols + c] += w * tmp[r * out_cols + c];
  return out;
}

}  // namespace detail

/// Decodes a PNG held in memory to grey values in [0, 1]; `name` labels errors.
inline GrayImage read_png_gray(const unsigned char* data, std::size_t size,
                               const std::string& name) {
  if (size == 0) throw io_error(name + ": empty file (0 bytes), not a PNG image");
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0)
    throw io_error(name + ": not a PNG image (no PNG signature)");
  // The IHDR's fields, read before libpng allocates anything, for messages naming them.
  if (size >= 26 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    auto be32 = [&](std::size_t o) {
      return (std::uint32_t{data[o]} << 24) | (std::uint32_t{data[o + 1]} << 16) |
             (std::uint32_t{data[o + 2]} << 8) | std::uint32_t{data[o + 3]};
    };
    const std::uint32_t w = be32(16), h = be32(20);
    const std::string dims = std::to_string(w) + " x " + std::to_string(h);
    if (w > png_max_side || h > png_max_side)
      throw io_error(name + ": the image is " + dims + " pixels; siam reads PNGs up to " +
                     std::to_string(png_max_side) + " x " + std::to_string(png_max_side));
    // Deflate compresses at most ~1032:1: a header claiming more raw bytes than that lies.
    const int bits = data[24], color = data[25];
    const int channels = color == 2 ? 3 : color == 4 ? 2 : color == 6 ? 4 : 1;
    const double raw =
        static_cast<double>(h) * (1.0 + std::ceil(static_cast<double>(w) * channels * bits / 8.0));
    if (raw > 1100.0 * static_cast<double>(size) + 65536.0)
      throw io_error(name + ": the header claims " + dims + " pixels, more than a file of " +
                     std::to_string(size) + " bytes can hold (truncated or forged)");
  }
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
  const bool ok = detail::png_decode_ga(png, info, s);
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok) throw io_error(name + ": unreadable PNG: " + s.message);

  GrayImage img;
  img.rows = s.height;
  img.cols = s.width;
  const std::size_t n = img.rows * img.cols;
  // Transparent pixels go on the background that contrasts with the (alpha-weighted) ink.
  double ink = 0, weight = 0;
  for (std::size_t i = 0; i < n; ++i) {
    ink += s.ga[2 * i] * static_cast<double>(s.ga[2 * i + 1]);
    weight += s.ga[2 * i + 1];
  }
  const double background = weight > 0 && ink / weight < 127.5 ? 255.0 : 0.0;
  img.pixels.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double a = s.ga[2 * i + 1] / 255.0;
    img.pixels[i] = static_cast<float>((s.ga[2 * i] * a + background * (1 - a)) / 255.0);
  }
  return img;
}

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
  auto be32 = [&](std::size_t o) {
    return (std::uint32_t{data[o]} << 24) | (std::uint32_t{data[o + 1]} << 16) |
           (std::uint32_t{data[o + 2]} << 8) | std::uint32_t{data[o + 3]};
  };
  const std::uint32_t w = be32(16), h = be32(20);
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

/// Reads a PNG file (see read_png_gray above). Throws io_error naming the file.
inline GrayImage read_png_gray(const std::filesystem::path& path) {
  const auto bytes = io::read_file(path, "read_png");
  return read_png_gray(bytes.data(), bytes.size(), path.string());
}

/// A grey image as a 28 x 28 training-style digit: white ink on black (inverted as `invert`
/// says; `*inverted` reports what was done), and, unless it already is 28 x 28, prepared as
/// MNIST was: the ink's bounding box scaled (area average, aspect kept) to fit 20 x 20 and
/// its centre of mass put at the centre of the 28 x 28 image. Values are quantised to k / 255.
/// A blank image stays blank. Throws value_error for an empty image.
inline std::vector<float> prepare_digit(const GrayImage& img, Invert invert = Invert::automatic,
                                        bool* inverted = nullptr) {
  constexpr std::size_t side = 28, box = 20;
  if (img.rows == 0 || img.cols == 0 || img.pixels.size() != img.rows * img.cols)
    throw value_error("prepare_digit: empty or inconsistent image (" + std::to_string(img.rows) +
                      " x " + std::to_string(img.cols) + ", " + std::to_string(img.pixels.size()) +
                      " values)");
  bool flip = invert == Invert::yes;
  if (invert == Invert::automatic) {
    double border = 0;
    std::size_t count = 0;
    for (std::size_t r = 0; r < img.rows; ++r)
      for (std::size_t c = 0; c < img.cols; ++c)
        if (r == 0 || c == 0 || r + 1 == img.rows || c + 1 == img.cols) {
          border += img.pixels[r * img.cols + c];
          ++count;
        }
    flip = border / static_cast<double>(count) > 0.5;
  }
  if (inverted) *inverted = flip;
  std::vector<float> x = img.pixels;
  if (flip)
    for (auto& v : x)
      v = 1.0f - v;
  auto quantise = [](std::vector<float>& v) {
    for (auto& p : v)
      p = static_cast<float>(std::lround(std::clamp(p, 0.0f, 1.0f) * 255.0f)) / 255.0f;
  };
  if (img.rows == side && img.cols == side) {
    quantise(x);
    return x;
  }
  // The ink's bounding box (pixels above a tenth of the brightest one).
  const float peak = *std::max_element(x.begin(), x.end());
  std::vector<float> out(side * side, 0.0f);
  if (!(peak > 0.0f)) return out;
  std::size_t r0 = img.rows, r1 = 0, c0 = img.cols, c1 = 0;
  for (std::size_t r = 0; r < img.rows; ++r)
    for (std::size_t c = 0; c < img.cols; ++c)
      if (x[r * img.cols + c] > 0.1f * peak) {
        r0 = std::min(r0, r), r1 = std::max(r1, r + 1);
        c0 = std::min(c0, c), c1 = std::max(c1, c + 1);
      }
  const std::size_t h = r1 - r0, w = c1 - c0;
  std::vector<float> crop(h * w);
  for (std::size_t r = 0; r < h; ++r)
    for (std::size_t c = 0; c < w; ++c)
      crop[r * w + c] = x[(r0 + r) * img.cols + c0 + c];
  const double scale = static_cast<double>(box) / static_cast<double>(std::max(h, w));
  const auto oh = std::clamp<std::size_t>(
      static_cast<std::size_t>(std::lround(static_cast<double>(h) * scale)), 1, box);
  const auto ow = std::clamp<std::size_t>(
      static_cast<std::size_t>(std::lround(static_cast<double>(w) * scale)), 1, box);
  const auto small = detail::resample_area(crop, h, w, oh, ow);
  double mass = 0, mr = 0, mc = 0;
  for (std::size_t r = 0; r < oh; ++r)
    for (std::size_t c = 0; c < ow; ++c) {
      const double v = small[r * ow + c];
      mass += v, mr += v * (static_cast<double>(r) + 0.5), mc += v * (static_cast<double>(c) + 0.5);
    }
  auto offset = [&](double com, std::size_t len) {
    const long o =
        std::lround(side / 2.0 - (mass > 0 ? com / mass : static_cast<double>(len) / 2.0));
    return static_cast<std::size_t>(std::clamp<long>(o, 0, static_cast<long>(side - len)));
  };
  const std::size_t top = offset(mr, oh), left = offset(mc, ow);
  for (std::size_t r = 0; r < oh; ++r)
    for (std::size_t c = 0; c < ow; ++c)
      out[(top + r) * side + left + c] = small[r * ow + c];
  quantise(out);
  return out;
}

/// read_png_gray + prepare_digit: a PNG file as a 28 x 28 training-style image.
inline std::vector<float> load_digit_png(const std::filesystem::path& path,
                                         Invert invert = Invert::automatic,
                                         bool* inverted = nullptr) {
  return prepare_digit(read_png_gray(path), invert, inverted);
}

}  // namespace siam::data

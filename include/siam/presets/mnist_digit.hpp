// MNIST's digit preparation (LeCun et al.): a grey image of a digit as a 28 x 28
// training-style image, white ink on black, the ink's bounding box scaled to fit 20 x 20
// and its centre of mass at the centre. A convention of one data set (a preset), for
// queries drawn or photographed outside it; decoding is elsewhere (data/png.hpp's
// read_png_gray gives the grey image).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "siam/data/image.hpp"
#include "siam/error.hpp"

namespace siam::presets {

/// Ink polarity: `automatic` inverts when the image's border is mostly light (dark ink on a
/// light background), `yes` always inverts, `no` never does.
enum class Invert { automatic, yes, no };

namespace detail {

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

/// A grey image as a 28 x 28 training-style digit: white ink on black (inverted as `invert`
/// says; `*inverted` reports what was done), and, unless it already is 28 x 28, prepared as
/// MNIST was: the ink's bounding box scaled (area average, aspect kept) to fit 20 x 20 and
/// its centre of mass put at the centre of the 28 x 28 image. Values are quantised to k / 255.
/// A blank image stays blank. Throws value_error for an empty image.
inline std::vector<float> prepare_digit(const data::GrayImage& img,
                                        Invert invert = Invert::automatic,
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

}  // namespace siam::presets

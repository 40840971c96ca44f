// Image transforms for training and evaluation, on float images in [0, 1] (rows x cols x
// channels, interleaved): resize (bilinear, antialiased when shrinking, as PIL and
// torchvision's antialias=True compute it; or an area average, as OpenCV's INTER_AREA
// shrinks), resize of the shorter side, centre crop, random resized crop, horizontal flip,
// brightness and contrast jitter, and normalisation by mean and std into the network's
// channels x rows x cols layout.
//
// Every random choice of apply_transform draws from transform_rng(seed, epoch, index): the
// same image in the same epoch is transformed the same way whichever thread does it, so a
// loader gives identical batches for any number of worker threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "siam/data/image.hpp"
#include "siam/error.hpp"
#include "siam/random.hpp"

namespace siam::data {

/// rows x cols pixels of `channels` float samples, interleaved, row-major.
struct FloatImage {
  std::size_t rows = 0, cols = 0, channels = 0;
  std::vector<float> pixels;

  float& at(std::size_t r, std::size_t c, std::size_t ch) {
    return pixels[(r * cols + c) * channels + ch];
  }
  float at(std::size_t r, std::size_t c, std::size_t ch) const {
    return pixels[(r * cols + c) * channels + ch];
  }
};

/// An 8-bit image as floats k / 255.
inline FloatImage to_float(const Image& img) {
  FloatImage out{img.rows, img.cols, img.channels, std::vector<float>(img.pixels.size())};
  for (std::size_t i = 0; i < img.pixels.size(); ++i)
    out.pixels[i] = static_cast<float>(img.pixels[i]) / 255.0f;
  return out;
}

enum class Filter {
  bilinear,  ///< triangle filter; widened by the scale when shrinking (antialiased)
  area       ///< box filter: each output pixel the average of the input area it covers
};

namespace detail {

/// One axis of a separable resampling: output k reads inputs [first[k], first[k] + n[k])
/// with weights w[k * width ...] (normalised to sum 1).
struct ResampleTaps {
  std::vector<std::size_t> first, n;
  std::vector<float> w;
  std::size_t width = 0;
};

/// The taps mapping the input interval [lo, lo + span) (pixel units) onto n_out outputs,
/// reading only inputs in [in_lo, in_hi) (the image, or a crop of it), each tap's weight
/// times `gain` (1/255 turns 8-bit samples into [0, 1] on the way). `t` keeps its storage.
inline void resample_taps(ResampleTaps& t, std::size_t in_lo, std::size_t in_hi, double lo,
                          double span, std::size_t n_out, Filter filter, float gain = 1.0f) {
  const double scale = span / static_cast<double>(n_out);
  const bool area = filter == Filter::area && scale >= 1.0;
  const double fscale = std::max(scale, 1.0);
  const double support = area ? 0.5 * scale : fscale;  // half-width of the filter
  t.width = static_cast<std::size_t>(std::ceil(support)) * 2 + 2;
  t.first.resize(n_out);
  t.n.resize(n_out);
  t.w.assign(n_out * t.width, 0.0f);
  const auto in0 = static_cast<double>(in_lo), in = static_cast<double>(in_hi);
  for (std::size_t k = 0; k < n_out; ++k) {
    const double centre = lo + (static_cast<double>(k) + 0.5) * scale;
    // PIL's window for the triangle; every pixel the box overlaps for the area filter.
    const double a = std::clamp(
        area ? std::floor(centre - support) : std::floor(centre - support + 0.5), in0, in);
    const double b = std::clamp(
        area ? std::ceil(centre + support) : std::floor(centre + support + 0.5), in0, in);
    auto first = static_cast<std::size_t>(a);
    auto count = static_cast<std::size_t>(b) - first;
    if (count == 0) {  // a window wholly outside (cannot happen for lo >= 0): nearest edge
      first = std::min(first, in_hi - 1);
      count = 1;
    }
    count = std::min(count, t.width);
    double sum = 0;
    for (std::size_t j = 0; j < count; ++j) {
      const double x = static_cast<double>(first + j) + 0.5;  // the input pixel's centre
      double v;
      if (area) {  // the overlap of [x - 0.5, x + 0.5) with [centre - support, centre + support)
        v = std::max(0.0,
                     std::min(x + 0.5, centre + support) - std::max(x - 0.5, centre - support));
      } else {
        v = std::max(0.0, 1.0 - std::abs(x - centre) / fscale);
      }
      t.w[k * t.width + j] = static_cast<float>(v);
      sum += v;
    }
    if (sum > 0)
      for (std::size_t j = 0; j < count; ++j)
        t.w[k * t.width + j] = static_cast<float>(t.w[k * t.width + j] / sum * gain);
    t.first[k] = first;
    t.n[k] = count;
  }
}

/// Scratch memory of resample_box, kept by each thread between images.
struct ResampleScratch {
  ResampleTaps rows, cols;
  std::vector<float> tmp;
};

/// The separable resampling of resize_box for CH channels (0: `ch` at run time), from
/// samples of type T (8-bit or float) times `gain`, into out_rows x out_cols x ch floats
/// at `out`. Inputs are read in rows [r_lo, r_hi) and columns [c_lo, c_hi) only.
template <std::size_t CH, typename T>
void resample_box(const T* px, std::size_t cols, std::size_t ch_rt, std::size_t r_lo,
                  std::size_t r_hi, std::size_t c_lo, std::size_t c_hi, double top, double left,
                  double height, double width, std::size_t out_rows, std::size_t out_cols,
                  Filter filter, float gain, float* out, ResampleScratch& s) {
  const std::size_t ch = CH == 0 ? ch_rt : CH;
  resample_taps(s.cols, c_lo, c_hi, left, width, out_cols, filter);
  resample_taps(s.rows, r_lo, r_hi, top, height, out_rows, filter, gain);
  const auto& tc = s.cols;
  const auto& tr = s.rows;
  // Vertical pass first (contiguous, vectorised; a shrink halves the rows or more) over the
  // columns the horizontal pass reads, then the horizontal pass.
  const std::size_t c0 = tc.first.front(), c1 = tc.first.back() + tc.n.back();
  const std::size_t line = (c1 - c0) * ch;
  s.tmp.resize(out_rows * line);
  for (std::size_t k = 0; k < out_rows; ++k) {
    float* o = &s.tmp[k * line];
    const float* w = &tr.w[k * tr.width];
    const T* in = px + (tr.first[k] * cols + c0) * ch;
    for (std::size_t i = 0; i < line; ++i)
      o[i] = w[0] * static_cast<float>(in[i]);
    for (std::size_t j = 1; j < tr.n[k]; ++j) {
      const float wj = w[j];
      const T* inj = in + j * cols * ch;
      for (std::size_t i = 0; i < line; ++i)
        o[i] += wj * static_cast<float>(inj[i]);
    }
  }
  for (std::size_t r = 0; r < out_rows; ++r) {
    const float* row = &s.tmp[r * line];
    float* o = out + r * out_cols * ch;
    for (std::size_t k = 0; k < out_cols; ++k, o += ch) {
      const float* in = row + (tc.first[k] - c0) * ch;
      const float* w = &tc.w[k * tc.width];
      const std::size_t n = tc.n[k];
      if constexpr (CH != 0) {
        float acc[CH] = {};
        for (std::size_t j = 0; j < n; ++j)
          for (std::size_t c = 0; c < CH; ++c)
            acc[c] += w[j] * in[j * CH + c];
        for (std::size_t c = 0; c < CH; ++c)
          o[c] = acc[c];
      } else {
        for (std::size_t c = 0; c < ch; ++c) {
          float acc = 0.0f;
          for (std::size_t j = 0; j < n; ++j)
            acc += w[j] * in[j * ch + c];
          o[c] = acc;
        }
      }
    }
  }
}

/// resample_box with the channel count dispatched to the compiled cases.
template <typename T>
void resample_box_any(const T* px, std::size_t cols, std::size_t ch, std::size_t r_lo,
                      std::size_t r_hi, std::size_t c_lo, std::size_t c_hi, double top, double left,
                      double height, double width, std::size_t out_rows, std::size_t out_cols,
                      Filter filter, float gain, float* out, ResampleScratch& s) {
  switch (ch) {
    case 1:
      return resample_box<1>(px, cols, ch, r_lo, r_hi, c_lo, c_hi, top, left, height, width,
                             out_rows, out_cols, filter, gain, out, s);
    case 3:
      return resample_box<3>(px, cols, ch, r_lo, r_hi, c_lo, c_hi, top, left, height, width,
                             out_rows, out_cols, filter, gain, out, s);
    default:
      return resample_box<0>(px, cols, ch, r_lo, r_hi, c_lo, c_hi, top, left, height, width,
                             out_rows, out_cols, filter, gain, out, s);
  }
}

}  // namespace detail

/// The box [top, top + height) x [left, left + width) of `img` (fractional allowed),
/// resampled to out_rows x out_cols with `filter`; the filter reads the pixels around the
/// box too (crop first to keep them out). Throws value_error for an empty image,
/// an empty output or a box outside the image.
inline FloatImage resize_box(const FloatImage& img, double top, double left, double height,
                             double width, std::size_t out_rows, std::size_t out_cols,
                             Filter filter = Filter::bilinear) {
  if (img.rows == 0 || img.cols == 0 || img.channels == 0 || out_rows == 0 || out_cols == 0)
    throw value_error("resize: " + std::to_string(img.rows) + " x " + std::to_string(img.cols) +
                      " x " + std::to_string(img.channels) + " image to " +
                      std::to_string(out_rows) + " x " + std::to_string(out_cols));
  if (top < 0 || left < 0 || height <= 0 || width <= 0 ||
      top + height > static_cast<double>(img.rows) || left + width > static_cast<double>(img.cols))
    throw value_error("resize: box at (" + std::to_string(top) + ", " + std::to_string(left) +
                      ") of " + std::to_string(height) + " x " + std::to_string(width) +
                      " is outside a " + std::to_string(img.rows) + " x " +
                      std::to_string(img.cols) + " image");
  FloatImage out{out_rows, out_cols, img.channels,
                 std::vector<float>(out_rows * out_cols * img.channels)};
  detail::ResampleScratch scratch;
  detail::resample_box_any(img.pixels.data(), img.cols, img.channels, 0, img.rows, 0, img.cols, top,
                           left, height, width, out_rows, out_cols, filter, 1.0f, out.pixels.data(),
                           scratch);
  return out;
}

/// The whole image resampled to out_rows x out_cols (see resize_box).
inline FloatImage resize(const FloatImage& img, std::size_t out_rows, std::size_t out_cols,
                         Filter filter = Filter::bilinear) {
  return resize_box(img, 0, 0, static_cast<double>(img.rows), static_cast<double>(img.cols),
                    out_rows, out_cols, filter);
}

/// Resizes so that the shorter side is `size`, the longer one size * long / short rounded
/// down (torchvision's Resize(int)).
inline FloatImage resize_shorter(const FloatImage& img, std::size_t size,
                                 Filter filter = Filter::bilinear) {
  if (img.rows == 0 || img.cols == 0 || size == 0)
    throw value_error("resize_shorter: " + std::to_string(img.rows) + " x " +
                      std::to_string(img.cols) + " image to a shorter side of " +
                      std::to_string(size));
  const std::size_t s = std::min(img.rows, img.cols), l = std::max(img.rows, img.cols);
  const auto other = static_cast<std::size_t>(static_cast<double>(size) * static_cast<double>(l) /
                                              static_cast<double>(s));
  return img.rows <= img.cols ? resize(img, size, other, filter) : resize(img, other, size, filter);
}

/// The pixels [top, top + height) x [left, left + width). Throws value_error when the box
/// is not inside the image.
inline FloatImage crop(const FloatImage& img, std::size_t top, std::size_t left, std::size_t height,
                       std::size_t width) {
  if (height == 0 || width == 0 || top + height > img.rows || left + width > img.cols)
    throw value_error("crop: " + std::to_string(height) + " x " + std::to_string(width) + " at (" +
                      std::to_string(top) + ", " + std::to_string(left) + ") is not inside a " +
                      std::to_string(img.rows) + " x " + std::to_string(img.cols) + " image");
  FloatImage out{height, width, img.channels, std::vector<float>(height * width * img.channels)};
  for (std::size_t r = 0; r < height; ++r)
    std::copy_n(&img.pixels[((top + r) * img.cols + left) * img.channels], width * img.channels,
                &out.pixels[r * width * img.channels]);
  return out;
}

/// The central height x width pixels; an odd margin puts the extra pixel where
/// torchvision's CenterCrop does (round half to even of the margin / 2).
inline FloatImage center_crop(const FloatImage& img, std::size_t height, std::size_t width) {
  if (height > img.rows || width > img.cols)
    throw value_error("center_crop: " + std::to_string(height) + " x " + std::to_string(width) +
                      " is larger than the " + std::to_string(img.rows) + " x " +
                      std::to_string(img.cols) + " image");
  const auto top =
      static_cast<std::size_t>(std::nearbyint(static_cast<double>(img.rows - height) / 2));
  const auto left =
      static_cast<std::size_t>(std::nearbyint(static_cast<double>(img.cols - width) / 2));
  return crop(img, top, left, height, width);
}

/// Mirrors left and right.
inline void hflip(FloatImage& img) {
  const std::size_t ch = img.channels;
  for (std::size_t r = 0; r < img.rows; ++r)
    for (std::size_t a = 0, b = img.cols - 1; a < b; ++a, --b)
      for (std::size_t c = 0; c < ch; ++c)
        std::swap(img.at(r, a, c), img.at(r, b, c));
}

/// Every sample times `factor`, clamped to [0, 1] (torchvision's adjust_brightness).
inline void adjust_brightness(FloatImage& img, float factor) {
  for (auto& v : img.pixels)
    v = std::clamp(v * factor, 0.0f, 1.0f);
}

/// Blends with the image's mean grey value m: factor * v + (1 - factor) * m, clamped to
/// [0, 1] (torchvision's adjust_contrast; grey of RGB = 0.299 R + 0.587 G + 0.114 B).
inline void adjust_contrast(FloatImage& img, float factor) {
  const std::size_t n = img.rows * img.cols, ch = img.channels;
  if (n == 0) return;
  double mean = 0;
  for (std::size_t i = 0; i < n; ++i)
    mean += ch >= 3 ? 0.299 * img.pixels[i * ch] + 0.587 * img.pixels[i * ch + 1] +
                          0.114 * img.pixels[i * ch + 2]
                    : img.pixels[i * ch];
  const auto m = static_cast<float>(mean / static_cast<double>(n));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < std::min<std::size_t>(ch, 3); ++c) {
      if (ch == 2 && c == 1) break;  // alpha is left alone
      float& v = img.pixels[i * ch + c];
      v = std::clamp(factor * v + (1.0f - factor) * m, 0.0f, 1.0f);
    }
}

/// A crop box of a random resized crop.
struct CropBox {
  std::size_t top = 0, left = 0, height = 0, width = 0;
};

/// torchvision's RandomResizedCrop.get_params: up to 10 draws of an area fraction in
/// [scale_lo, scale_hi] and a log-uniform aspect ratio in [ratio_lo, ratio_hi] until the
/// box fits, else the largest central box whose aspect ratio is clamped to the range.
inline CropBox random_resized_crop_box(std::size_t rows, std::size_t cols, Rng& rng,
                                       double scale_lo = 0.08, double scale_hi = 1.0,
                                       double ratio_lo = 3.0 / 4.0, double ratio_hi = 4.0 / 3.0) {
  if (rows == 0 || cols == 0 || !(scale_lo > 0) || scale_lo > scale_hi || !(ratio_lo > 0) ||
      ratio_lo > ratio_hi)
    throw value_error("random_resized_crop: image " + std::to_string(rows) + " x " +
                      std::to_string(cols) + ", scale [" + std::to_string(scale_lo) + ", " +
                      std::to_string(scale_hi) + "], ratio [" + std::to_string(ratio_lo) + ", " +
                      std::to_string(ratio_hi) + "]");
  const double area = static_cast<double>(rows) * static_cast<double>(cols);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale_lo, scale_hi);
    const double aspect = std::exp(rng.uniform(std::log(ratio_lo), std::log(ratio_hi)));
    const auto w = static_cast<long>(std::nearbyint(std::sqrt(target * aspect)));
    const auto h = static_cast<long>(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && h > 0 && static_cast<std::size_t>(w) <= cols &&
        static_cast<std::size_t>(h) <= rows) {
      CropBox b{0, 0, static_cast<std::size_t>(h), static_cast<std::size_t>(w)};
      b.top = static_cast<std::size_t>(rng.below(rows - b.height + 1));
      b.left = static_cast<std::size_t>(rng.below(cols - b.width + 1));
      return b;
    }
  }
  const double in_ratio = static_cast<double>(cols) / static_cast<double>(rows);
  CropBox b{0, 0, rows, cols};
  if (in_ratio < ratio_lo)
    b.height = std::max<std::size_t>(
        1, static_cast<std::size_t>(std::nearbyint(static_cast<double>(cols) / ratio_lo)));
  else if (in_ratio > ratio_hi)
    b.width = std::max<std::size_t>(
        1, static_cast<std::size_t>(std::nearbyint(static_cast<double>(rows) * ratio_hi)));
  b.height = std::min(b.height, rows);
  b.width = std::min(b.width, cols);
  b.top = (rows - b.height) / 2;
  b.left = (cols - b.width) / 2;
  return b;
}

/// What apply_transform does to a decoded image.
struct TransformSpec {
  std::size_t size = 64;  ///< output: size x size
  /// false (evaluation): shorter side to `size`, centre crop. true (training): random
  /// resized crop to size x size, then a horizontal flip and jitter as set below.
  bool augment = false;
  double crop_scale_lo = 0.5, crop_scale_hi = 1.0;              ///< area fraction of the crop
  double crop_ratio_lo = 3.0 / 4.0, crop_ratio_hi = 4.0 / 3.0;  ///< aspect ratio range
  double flip_probability = 0.5;
  double brightness = 0.2;  ///< factor drawn from [1 - b, 1 + b]
  double contrast = 0.2;    ///< factor drawn from [1 - c, 1 + c]
  Filter filter = Filter::bilinear;
  std::vector<float> mean{0.0f}, std{1.0f};  ///< per channel, or one value for every channel
  /// Evaluation path: a loader lets the decoder shrink while decoding (JPEG's DCT scaling
  /// by k/8, see DecodeLimits::min_side) as long as the shorter side stays at least
  /// `size`: several times faster when the files are at least twice the output size, pixels
  /// within a few levels of a full decode resized. false: always a full decode.
  bool decode_shrink = true;
};

/// The generator of every random choice for image `index` in `epoch`: a pure function of
/// the three, so the result does not depend on which thread transforms which image.
inline Rng transform_rng(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index) {
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return Rng(
      mix(mix(mix(seed) ^ (epoch + 0x9e3779b97f4a7c15ULL)) ^ (index + 0x632be59bd9b4e019ULL)));
}

/// Transforms `img` as `spec` says and writes channels x size x size values (channel
/// planes, as the network reads them) to `out`, normalised by the spec's mean and std.
/// `rng` is used only when spec.augment. Throws value_error for a bad spec.
inline void apply_transform(const Image& img, const TransformSpec& spec, Rng& rng, float* out) {
  const std::size_t ch = img.channels, s = spec.size;
  auto per_channel = [&](const std::vector<float>& v, const char* what) {
    if (v.size() != 1 && v.size() != ch)
      throw value_error(std::string("apply_transform: ") + what + " has " +
                        std::to_string(v.size()) + " values for " + std::to_string(ch) +
                        " channels");
  };
  per_channel(spec.mean, "mean");
  per_channel(spec.std, "std");
  if (s == 0) throw value_error("apply_transform: output size 0");
  if (img.rows == 0 || img.cols == 0 || ch == 0 || img.pixels.size() != img.rows * img.cols * ch)
    throw value_error("apply_transform: a " + std::to_string(img.rows) + " x " +
                      std::to_string(img.cols) + " x " + std::to_string(ch) + " image with " +
                      std::to_string(img.pixels.size()) + " samples");
  // Resampled straight from the 8-bit samples (1/255 folded into the weights) into memory
  // each thread keeps: no float copy of the decoded image, no allocation once warm.
  thread_local detail::ResampleScratch scratch;
  thread_local FloatImage x;
  x.rows = x.cols = s;
  x.channels = ch;
  x.pixels.resize(s * s * ch);
  constexpr float gain = 1.0f / 255.0f;
  if (spec.augment) {
    // The crop's own pixels only, as crop() then resize() would read them.
    const auto b =
        random_resized_crop_box(img.rows, img.cols, rng, spec.crop_scale_lo, spec.crop_scale_hi,
                                spec.crop_ratio_lo, spec.crop_ratio_hi);
    detail::resample_box_any(
        img.pixels.data(), img.cols, ch, b.top, b.top + b.height, b.left, b.left + b.width,
        static_cast<double>(b.top), static_cast<double>(b.left), static_cast<double>(b.height),
        static_cast<double>(b.width), s, s, spec.filter, gain, x.pixels.data(), scratch);
    if (rng.bernoulli(spec.flip_probability)) hflip(x);
    if (spec.brightness > 0)
      adjust_brightness(x,
                        static_cast<float>(rng.uniform(1 - spec.brightness, 1 + spec.brightness)));
    if (spec.contrast > 0)
      adjust_contrast(x, static_cast<float>(rng.uniform(1 - spec.contrast, 1 + spec.contrast)));
  } else if (img.rows == s && img.cols == s) {
    // k / 255 exactly (k * (1 / 255.0f) may differ in the last bit), as the IDX reader
    // gives it: the same images read either way are the same floats.
    for (std::size_t i = 0; i < s * s * ch; ++i)
      x.pixels[i] = static_cast<float>(img.pixels[i]) / 255.0f;
  } else {
    // resize_shorter then center_crop, computed as one resampling of the box the crop keeps.
    const std::size_t sh = std::min(img.rows, img.cols), lg = std::max(img.rows, img.cols);
    const auto other = static_cast<std::size_t>(static_cast<double>(s) * static_cast<double>(lg) /
                                                static_cast<double>(sh));
    const std::size_t rr = img.rows <= img.cols ? s : other, rc = img.rows <= img.cols ? other : s;
    const double top = std::nearbyint(static_cast<double>(rr - s) / 2);
    const double left = std::nearbyint(static_cast<double>(rc - s) / 2);
    const double fr = static_cast<double>(img.rows) / static_cast<double>(rr);
    const double fc = static_cast<double>(img.cols) / static_cast<double>(rc);
    detail::resample_box_any(img.pixels.data(), img.cols, ch, 0, img.rows, 0, img.cols, top * fr,
                             left * fc, static_cast<double>(s) * fr, static_cast<double>(s) * fc, s,
                             s, spec.filter, gain, x.pixels.data(), scratch);
  }
  for (std::size_t c = 0; c < ch; ++c) {
    const float m = spec.mean[spec.mean.size() == 1 ? 0 : c];
    const float sd = spec.std[spec.std.size() == 1 ? 0 : c];
    for (std::size_t i = 0; i < s * s; ++i)
      out[c * s * s + i] = (x.pixels[i * ch + c] - m) / sd;
  }
}

}  // namespace siam::data

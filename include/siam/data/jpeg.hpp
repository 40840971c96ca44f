// Reading JPEG files through libjpeg-turbo's TurboJPEG API: read_jpeg decodes baseline and
// progressive JPEGs to 8-bit grey, RGB or RGBA (an Image, see siam/data/image.hpp), at full
// size or shrunk inside the inverse DCT (DecodeLimits::min_side); read_jpeg_into reuses the
// caller's buffer; jpeg_codec() is the codec image folders dispatch on. Each thread keeps
// one decompressor.
// Optional: needs libturbojpeg (CMake: siam::jpeg, Debian libturbojpeg0-dev); the umbrella
// header does not include it.
//
// Hostile files are rejected with an io_error naming the file: empty, not a JPEG, a header
// claiming more pixels than DecodeLimits allow (refused before the pixels are allocated),
// truncated or corrupt data (libjpeg's warnings, such as a premature end of data, are
// errors here: a half-grey image is never returned), and progressive files with more than
// libjpeg-turbo's scan limit (500 scans).
#pragma once

#include <turbojpeg.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/data/image.hpp"
#include "siam/error.hpp"
#include "siam/io/file.hpp"

namespace siam::data {

namespace detail {

/// A TurboJPEG decompressor, destroyed with its scope.
class TjDecompressor {
 public:
  TjDecompressor() : h_(tjInitDecompress()) {
    if (!h_) throw io_error("libjpeg-turbo could not be initialised");
  }
  ~TjDecompressor() { tjDestroy(h_); }
  TjDecompressor(const TjDecompressor&) = delete;
  TjDecompressor& operator=(const TjDecompressor&) = delete;
  tjhandle get() const { return h_; }
  /// A fresh handle: one that failed mid-decode is not reused.
  void reset() {
    tjhandle fresh = tjInitDecompress();
    if (!fresh) throw io_error("libjpeg-turbo could not be initialised");
    tjDestroy(h_);
    h_ = fresh;
  }
  std::string message() const { return tjGetErrorStr2(h_); }

 private:
  tjhandle h_;
};

inline bool is_jpeg(const std::uint8_t* d, std::size_t n) {
  return n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff;
}

}  // namespace detail

namespace detail {

/// The smallest of libjpeg-turbo's DCT scaling factors (k/8 for k = 1 ... 8) that keeps
/// the shorter side of a w x h image at least min_side (1: min_side 0 or none smaller fits).
inline tjscalingfactor jpeg_scale_for(int w, int h, std::size_t min_side) {
  tjscalingfactor best{1, 1};
  if (min_side == 0) return best;
  int n = 0;
  const tjscalingfactor* f = tjGetScalingFactors(&n);
  const auto side = [&](const tjscalingfactor& s) {
    return static_cast<std::size_t>(TJSCALED(std::min(w, h), s));
  };
  for (int i = 0; f && i < n; ++i)
    if (f[i].num <= f[i].denom && side(f[i]) >= min_side && side(f[i]) < side(best)) best = f[i];
  return best;
}

}  // namespace detail

/// Decodes a JPEG held in memory into `img` (its pixel buffer reused: no allocation when it
/// is large enough), 8-bit samples, `channels` per pixel: 1 grey (a colour file's luma, as
/// libjpeg computes it), 2 grey + alpha, 3 RGB, 4 RGBA (alpha opaque: a JPEG has none), 0 as
/// stored (1 for a grey file, else 3). limits.min_side > 0 lets the decoder shrink by k/8
/// (k = 1 ... 7) inside the inverse DCT (libjpeg-turbo's scaling, far cheaper than decoding the
/// whole image and resizing it) as long as the shorter side stays at least min_side; the
/// pixels are then the DCT's downscale, close to but not those of a full decode resized. Throws
/// io_error naming `name` on bad data (see the header comment), value_error for more than 4
/// channels.
inline void read_jpeg_into(Image& img, const std::uint8_t* data, std::size_t size,
                           const std::string& name, std::size_t channels = 0,
                           const DecodeLimits& limits = {}) {
  detail::check_channel_request(channels, name);
  if (size == 0) throw io_error(name + ": empty file (0 bytes), not a JPEG image");
  if (!detail::is_jpeg(data, size))
    throw io_error(name + ": not a JPEG image (no JPEG SOI marker)");
  if (size > 0x7fffffffu) throw io_error(name + ": the JPEG file is larger than 2 GiB");
  // One decompressor per thread, reused: creating one costs as much as decoding a small image.
  thread_local detail::TjDecompressor tj;
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  auto fail = [&](const std::string& what) {
    const std::string msg = name + ": " + what + tj.message();
    tj.reset();
    throw io_error(msg);
  };
  if (tjDecompressHeader3(tj.get(), data, static_cast<unsigned long>(size), &w, &h, &subsamp,
                          &colorspace) != 0)
    fail("truncated or corrupt JPEG (header): ");
  if (w <= 0 || h <= 0)
    throw io_error(name + ": truncated or corrupt JPEG: the header claims " + std::to_string(w) +
                   " x " + std::to_string(h) + " pixels");
  detail::check_pixel_limit(static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(w), limits,
                            name, "JPEG");
  const tjscalingfactor sf = detail::jpeg_scale_for(w, h, limits.min_side);
  const int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  if (channels == 0) channels = colorspace == TJCS_GRAY ? 1 : 3;
  const std::size_t decoded = channels == 2 ? 1 : channels;
  const int format = decoded == 1 ? TJPF_GRAY : decoded == 3 ? TJPF_RGB : TJPF_RGBA;
  img.rows = static_cast<std::size_t>(sh);
  img.cols = static_cast<std::size_t>(sw);
  img.channels = channels;
  img.pixels.resize(img.rows * img.cols * channels);
  int flags = TJFLAG_STOPONWARNING | TJFLAG_ACCURATEDCT;
#ifdef TJFLAG_LIMITSCANS
  flags |= TJFLAG_LIMITSCANS;
#endif
  if (tjDecompress2(tj.get(), data, static_cast<unsigned long>(size), img.pixels.data(), sw,
                    sw * static_cast<int>(decoded), sh, format, flags) != 0)
    fail("truncated or corrupt JPEG: ");
  if (channels == 2)  // grey + opaque alpha, expanded in place from the back
    for (std::size_t i = img.rows * img.cols; i-- > 0;) {
      img.pixels[2 * i] = img.pixels[i];
      img.pixels[2 * i + 1] = 255;
    }
}

/// Decodes a JPEG held in memory into a new Image (see read_jpeg_into).
inline Image read_jpeg(const std::uint8_t* data, std::size_t size, const std::string& name,
                       std::size_t channels = 0, const DecodeLimits& limits = {}) {
  Image img;
  read_jpeg_into(img, data, size, name, channels, limits);
  return img;
}

/// Reads a JPEG file (see read_jpeg above). Throws io_error naming the file.
inline Image read_jpeg(const std::filesystem::path& path, std::size_t channels = 0,
                       const DecodeLimits& limits = {}) {
  const auto bytes = io::read_file(path, "read_jpeg");
  return read_jpeg(bytes.data(), bytes.size(), path.string(), channels, limits);
}

/// The JPEG codec for image folders (siam/data/image_folder.hpp).
inline ImageCodec jpeg_codec() {
  return ImageCodec{
      "JPEG", detail::is_jpeg,
      [](const std::uint8_t* d, std::size_t n, const std::string& name, std::size_t ch,
         const DecodeLimits& lim) { return read_jpeg(d, n, name, ch, lim); }};
}

}  // namespace siam::data

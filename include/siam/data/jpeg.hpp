// Reading JPEG files through libjpeg-turbo's TurboJPEG API: read_jpeg decodes baseline and
// progressive JPEGs to 8-bit grey, RGB or RGBA (an Image, see siam/data/image.hpp);
// jpeg_codec() is the codec image folders dispatch on.
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

/// Decodes a JPEG held in memory to 8-bit samples, `channels` per pixel: 1 grey (a colour
/// file's luma, as libjpeg computes it), 2 grey + alpha, 3 RGB, 4 RGBA (alpha opaque: a
/// JPEG has none), 0 as stored (1 for a grey file, else 3). Throws io_error naming `name` on
/// bad data (see the header comment), value_error for more than 4 channels.
inline Image read_jpeg(const std::uint8_t* data, std::size_t size, const std::string& name,
                       std::size_t channels = 0, const DecodeLimits& limits = {}) {
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
  if (channels == 0) channels = colorspace == TJCS_GRAY ? 1 : 3;
  const std::size_t decoded = channels == 2 ? 1 : channels;
  const int format = decoded == 1 ? TJPF_GRAY : decoded == 3 ? TJPF_RGB : TJPF_RGBA;
  Image img;
  img.rows = static_cast<std::size_t>(h);
  img.cols = static_cast<std::size_t>(w);
  img.channels = channels;
  img.pixels.resize(img.rows * img.cols * channels);
  int flags = TJFLAG_STOPONWARNING | TJFLAG_ACCURATEDCT;
#ifdef TJFLAG_LIMITSCANS
  flags |= TJFLAG_LIMITSCANS;
#endif
  if (tjDecompress2(tj.get(), data, static_cast<unsigned long>(size), img.pixels.data(), w,
                    w * static_cast<int>(decoded), h, format, flags) != 0)
    fail("truncated or corrupt JPEG: ");
  if (channels == 2)  // grey + opaque alpha, expanded in place from the back
    for (std::size_t i = img.rows * img.cols; i-- > 0;) {
      img.pixels[2 * i] = img.pixels[i];
      img.pixels[2 * i + 1] = 255;
    }
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

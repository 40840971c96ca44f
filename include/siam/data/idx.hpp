// Reader and writer for the IDX format of MNIST (raw or gzip-compressed; the gzip format is
// io/gzip.hpp).
//
// Files are untrusted input: every header field is validated and a header is never
// believed about sizes. Raw data is checked against the bytes really present before
// anything is allocated; gzip data is inflated incrementally into a buffer that grows
// only as decompressed bytes actually arrive, capped by what the header describes, so
// memory is bounded by the real data. Every failure is an io_error whose message
// names the file and the problem. The *_bytes functions parse an in-memory buffer
// (for fuzzers and embedded data); the file functions wrap them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/error.hpp"
#include "siam/io/file.hpp"
#include "siam/io/gzip.hpp"

namespace siam::data {

/// Images of an IDX image file: count images of rows x cols, pixels = count*rows*cols
/// floats in [0, 1] (byte / 255), image after image, row-major. file_count is the
/// number of images in the file (count is smaller when only a prefix was kept).
struct IdxImages {
  std::size_t count = 0, rows = 0, cols = 0, file_count = 0;
  std::vector<float> pixels;
};

/// Default for max_items: keep every item of the file.
inline constexpr std::size_t idx_all_items = std::numeric_limits<std::size_t>::max();

namespace detail {

using io::gzip_bytes;  // the gzip format lives in io/gzip.hpp
using io::GzipReader;
using io::is_gzip;

inline constexpr std::uint32_t idx_images_magic = 0x00000803;  // ubyte, 3 dimensions
inline constexpr std::uint32_t idx_labels_magic = 0x00000801;  // ubyte, 1 dimension
// A side longer than this is taken as a corrupt header: no IDX image set in use
// comes close, and one such image would already be a gigabyte of floats.
inline constexpr std::uint64_t idx_max_side = 16384;

enum class IdxKind { images, labels };

// Where a parse happens, for messages: the file name and whether the bytes came
// out of a gzip stream (sizes then refer to decompressed data).
struct IdxContext {
  std::string_view name;
  bool gzip = false;
};

struct IdxHeader {
  std::size_t header_bytes = 0;
  std::size_t count = 0, rows = 1, cols = 1;
  std::uint64_t payload = 0;  // bytes after the header that the header describes
};

[[noreturn]] inline void idx_fail(const IdxContext& ctx, const std::string& problem) {
  throw io_error("read_idx: " + std::string(ctx.name) + ": " + problem +
                 (ctx.gzip ? " (in the decompressed gzip data)" : ""));
}

inline std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(v));
  return buf;
}

inline std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

inline void put_be32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8)
    out.push_back(static_cast<std::uint8_t>(v >> s));
}

inline std::size_t idx_header_bytes(IdxKind kind) {
  return kind == IdxKind::images ? 16 : 8;
}

// Validates the header at the start of data (data may hold more than the header).
// Checks in an order that reports the most specific problem: magic, zero sizes,
// 64-bit then 32-bit overflow of the products, absurd sides.
inline IdxHeader parse_idx_header(std::span<const std::uint8_t> data, IdxKind kind,
                                  const IdxContext& ctx) {
  const bool images = kind == IdxKind::images;
  const char* what = images ? "IDX image file" : "IDX label file";
  IdxHeader h;
  h.header_bytes = idx_header_bytes(kind);
  if (data.empty()) idx_fail(ctx, "empty file");
  if (data.size() < h.header_bytes)
    idx_fail(ctx, "truncated header: " + std::to_string(data.size()) + " bytes, an " + what +
                      " header needs " + std::to_string(h.header_bytes));
  const std::uint32_t magic = be32(data.data());
  const std::uint32_t expected = images ? idx_images_magic : idx_labels_magic;
  if (magic != expected) {
    std::string hint;
    if (magic == (images ? idx_labels_magic : idx_images_magic))
      hint = images ? " (this is a label file)" : " (this is an image file)";
    idx_fail(ctx, "wrong magic " + hex32(magic) + ", expected " + hex32(expected) + " for an " +
                      what + hint);
  }
  const std::uint64_t count = be32(data.data() + 4);
  if (!images) {
    if (count == 0) idx_fail(ctx, "header claims zero labels");
    h.count = static_cast<std::size_t>(count);
    h.payload = count;
    return h;
  }
  const std::uint64_t rows = be32(data.data() + 8), cols = be32(data.data() + 12);
  const std::string dims =
      std::to_string(count) + " x " + std::to_string(rows) + " x " + std::to_string(cols);
  if (count == 0 || rows == 0 || cols == 0)
    idx_fail(ctx, "zero dimension in header (count x rows x cols = " + dims + ")");
  std::uint64_t px = 0, total = 0;
  if (__builtin_mul_overflow(rows, cols, &px) || __builtin_mul_overflow(px, count, &total))
    idx_fail(ctx, "header dimensions " + dims + " overflow a 64-bit byte count");
  if (px > std::numeric_limits<std::uint32_t>::max())
    idx_fail(ctx, "image size rows x cols = " + std::to_string(px) + " overflows 32 bits");
  if (rows > idx_max_side || cols > idx_max_side)
    idx_fail(ctx, "absurd image size " + std::to_string(rows) + " x " + std::to_string(cols) +
                      " (a side may be at most " + std::to_string(idx_max_side) + ")");
  if (total > std::numeric_limits<std::size_t>::max() / sizeof(float))
    idx_fail(ctx, "header dimensions " + dims + " exceed the address space");
  h.count = static_cast<std::size_t>(count);
  h.rows = static_cast<std::size_t>(rows);
  h.cols = static_cast<std::size_t>(cols);
  h.payload = total;
  return h;
}

// The bytes after the header must be exactly what the header describes.
inline void check_idx_body(const IdxHeader& h, std::size_t available, IdxKind kind,
                           const IdxContext& ctx) {
  const std::uint64_t have = available - h.header_bytes;
  const std::string claim = kind == IdxKind::images
                                ? std::to_string(h.count) + " images of " + std::to_string(h.rows) +
                                      " x " + std::to_string(h.cols)
                                : std::to_string(h.count) + " labels";
  if (have < h.payload)
    idx_fail(ctx, "truncated body: header claims " + claim + " (" + std::to_string(h.payload) +
                      " bytes) but only " + std::to_string(have) + " bytes follow the header");
  if (have > h.payload)
    idx_fail(ctx, "trailing garbage: " + std::to_string(have - h.payload) + " bytes after the " +
                      std::to_string(h.payload) + " bytes of " + claim);
}

// The complete decompressed file, read under the cap the header implies (header +
// payload + 1 byte, the extra byte to notice trailing garbage).
inline std::vector<std::uint8_t> gunzip_idx(std::span<const std::uint8_t> bytes, IdxKind kind,
                                            const IdxContext& ctx) {
  GzipReader gz(bytes, ctx.name, "read_idx");
  std::vector<std::uint8_t> data;
  const std::size_t hb = idx_header_bytes(kind);
  gz.read(data, hb);
  const IdxHeader h = parse_idx_header(data, kind, ctx);  // throws if short
  const std::uint64_t body_cap = h.payload + 1;           // payload < 2^64 - 1 by the checks
  gz.read(data, static_cast<std::size_t>(std::min<std::uint64_t>(
                    body_cap, std::numeric_limits<std::size_t>::max() - hb)));
  if (data.size() - hb > h.payload) {
    const std::uint64_t extra = (data.size() - hb - h.payload) + gz.skip_rest();
    idx_fail(ctx, "trailing garbage: " + std::to_string(extra) + " bytes after the " +
                      std::to_string(h.payload) + " bytes the header describes");
  }
  return data;
}

inline IdxImages decode_idx_images(std::span<const std::uint8_t> data, const IdxContext& ctx,
                                   std::size_t max_items) {
  const IdxHeader h = parse_idx_header(data, IdxKind::images, ctx);
  check_idx_body(h, data.size(), IdxKind::images, ctx);
  IdxImages out;
  out.count = std::min(h.count, max_items);
  out.file_count = h.count;
  out.rows = h.rows;
  out.cols = h.cols;
  out.pixels.resize(out.count * h.rows * h.cols);  // verified present above
  const std::uint8_t* src = data.data() + h.header_bytes;
  for (std::size_t i = 0; i < out.pixels.size(); ++i)
    out.pixels[i] = static_cast<float>(src[i]) / 255.0f;
  return out;
}

inline std::vector<std::uint8_t> decode_idx_labels(std::span<const std::uint8_t> data,
                                                   const IdxContext& ctx, unsigned max_label,
                                                   std::size_t max_items) {
  const IdxHeader h = parse_idx_header(data, IdxKind::labels, ctx);
  check_idx_body(h, data.size(), IdxKind::labels, ctx);
  const std::uint8_t* src = data.data() + h.header_bytes;
  for (std::size_t i = 0; i < h.count; ++i)  // the whole file is validated, not just the kept part
    if (src[i] > max_label)
      idx_fail(ctx, "label " + std::to_string(src[i]) + " at index " + std::to_string(i) +
                        " exceeds the maximum label " + std::to_string(max_label));
  return std::vector<std::uint8_t>(src, src + std::min(h.count, max_items));
}

}  // namespace detail

/// Parses an IDX image file held in memory (raw, or gzip detected by its 0x1f 0x8b
/// magic). name is used in messages only. Keeps the first max_items images (the
/// whole file is validated regardless).
/// Throws io_error naming `name` and the problem: empty data, truncated header, wrong
/// magic, zero/absurd/overflowing dimensions, truncated body, trailing garbage,
/// corrupt gzip or gzip that ends early.
inline IdxImages read_idx_images_bytes(std::span<const std::uint8_t> bytes, std::string_view name,
                                       std::size_t max_items = idx_all_items) {
  using namespace detail;
  if (is_gzip(bytes)) {
    const IdxContext ctx{name, true};
    const std::vector<std::uint8_t> data = gunzip_idx(bytes, IdxKind::images, ctx);
    return decode_idx_images(data, ctx, max_items);
  }
  return decode_idx_images(bytes, IdxContext{name, false}, max_items);
}

/// Parses an IDX label file held in memory (raw or gzip); every label must be
/// <= max_label. Keeps the first max_items labels.
/// Throws io_error as read_idx_images_bytes, and for a label above max_label.
inline std::vector<std::uint8_t> read_idx_labels_bytes(std::span<const std::uint8_t> bytes,
                                                       std::string_view name,
                                                       unsigned max_label = 9,
                                                       std::size_t max_items = idx_all_items) {
  using namespace detail;
  if (is_gzip(bytes)) {
    const IdxContext ctx{name, true};
    const std::vector<std::uint8_t> data = gunzip_idx(bytes, IdxKind::labels, ctx);
    return decode_idx_labels(data, ctx, max_label, max_items);
  }
  return decode_idx_labels(bytes, IdxContext{name, false}, max_label, max_items);
}

/// Reads an IDX image file (raw or .gz). Throws io_error (names the file) if it
/// cannot be read or is malformed; see read_idx_images_bytes.
inline IdxImages read_idx_images(const std::filesystem::path& path,
                                 std::size_t max_items = idx_all_items) {
  const auto bytes = io::read_file(path, "read_idx");
  return read_idx_images_bytes(bytes, path.string(), max_items);
}

/// Reads an IDX label file (raw or .gz); labels must be <= max_label.
/// Throws io_error (names the file); see read_idx_labels_bytes.
inline std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& path,
                                                 unsigned max_label = 9,
                                                 std::size_t max_items = idx_all_items) {
  const auto bytes = io::read_file(path, "read_idx");
  return read_idx_labels_bytes(bytes, path.string(), max_label, max_items);
}

/// Reads an image file and its label file into a Dataset (first max_items of each).
/// Throws io_error for any malformed file and when the image and label counts of
/// the two files differ (the message names both files and counts).
inline Dataset read_idx(const std::filesystem::path& images, const std::filesystem::path& labels,
                        unsigned max_label = 9, std::size_t max_items = idx_all_items) {
  IdxImages im = read_idx_images(images, max_items);
  std::vector<std::uint8_t> lb = read_idx_labels(labels, max_label);  // all: for the count check
  if (im.file_count != lb.size())
    throw io_error("read_idx: " + images.string() + " holds " + std::to_string(im.file_count) +
                   " images but " + labels.string() + " holds " + std::to_string(lb.size()) +
                   " labels (count mismatch)");
  lb.resize(im.count);
  Dataset ds;
  ds.rows = im.rows;
  ds.cols = im.cols;
  ds.images = std::move(im.pixels);
  ds.labels.assign(lb.begin(), lb.end());  // one byte on disk, int64 in memory
  return ds;
}

/// Writes ds as an IDX image file and an IDX label file, gzip-compressed when gzip is
/// true. Pixels are stored as round(255 * v). Each file is written to a temporary
/// name and renamed, so readers never see a partial file.
/// Throws value_error for an empty or inconsistent data set, a pixel outside [0, 1]
/// (or NaN), a label outside 0..255 (IDX labels are one byte), or dimensions IDX cannot
/// hold; io_error if a file cannot be written.
inline void write_idx(const std::filesystem::path& images_path,
                      const std::filesystem::path& labels_path, const Dataset& ds, bool gzip) {
  ds.validate();
  if (ds.size() == 0) throw value_error("write_idx: the data set is empty");
  constexpr std::size_t u32max = std::numeric_limits<std::uint32_t>::max();
  if (ds.size() > u32max || ds.rows > detail::idx_max_side || ds.cols > detail::idx_max_side)
    throw value_error("write_idx: " + std::to_string(ds.size()) + " images of " +
                      std::to_string(ds.rows) + " x " + std::to_string(ds.cols) +
                      " do not fit the IDX format");
  std::vector<std::uint8_t> im;
  im.reserve(16 + ds.images.size());
  detail::put_be32(im, detail::idx_images_magic);
  detail::put_be32(im, static_cast<std::uint32_t>(ds.size()));
  detail::put_be32(im, static_cast<std::uint32_t>(ds.rows));
  detail::put_be32(im, static_cast<std::uint32_t>(ds.cols));
  for (std::size_t i = 0; i < ds.images.size(); ++i) {
    const float v = ds.images[i];
    if (!(v >= 0.0f && v <= 1.0f))  // also catches NaN
      throw value_error("write_idx: pixel " + std::to_string(i % ds.pixels()) + " of image " +
                        std::to_string(i / ds.pixels()) + " is " + std::to_string(v) +
                        ", outside [0, 1]");
    im.push_back(static_cast<std::uint8_t>(std::lround(v * 255.0f)));
  }
  std::vector<std::uint8_t> lb;
  lb.reserve(8 + ds.size());
  detail::put_be32(lb, detail::idx_labels_magic);
  detail::put_be32(lb, static_cast<std::uint32_t>(ds.size()));
  for (std::size_t i = 0; i < ds.size(); ++i) {
    const std::int64_t l = ds.labels[i];
    if (l < 0 || l > 255)
      throw value_error("write_idx: label " + std::to_string(l) + " of image " + std::to_string(i) +
                        " does not fit the IDX label byte (0..255)");
    lb.push_back(static_cast<std::uint8_t>(l));
  }
  if (gzip) {
    im = detail::gzip_bytes(im, images_path.string(), "write_idx");
    lb = detail::gzip_bytes(lb, labels_path.string(), "write_idx");
  }
  io::write_file_atomic(images_path, im);
  io::write_file_atomic(labels_path, lb);
}

}  // namespace siam::data

// The gzip format over in-memory buffers (zlib): an incremental reader whose memory grows
// only as decompressed bytes arrive (the caller caps how many it wants), and a
// deterministic writer. Every failure is an io_error naming the file and the problem.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "siam/error.hpp"

namespace siam::io {

/// Whether `b` starts with gzip's magic bytes 0x1f 0x8b.
inline bool is_gzip(std::span<const std::uint8_t> b) {
  return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

// Incremental gunzip over an in-memory buffer. Accepts concatenated gzip members
// (as `cat a.gz b.gz` produces); rejects anything else after the last member.
class GzipReader {
 public:
  /// `name` (the file) and `who` (the reading function) head every error message.
  GzipReader(std::span<const std::uint8_t> in, std::string_view name,
             std::string_view who = "gunzip")
      : in_(in), name_(name), who_(who) {
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) fail("zlib could not start inflating");
  }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;
  ~GzipReader() { inflateEnd(&zs_); }

  /// Appends decompressed bytes to out until `want` more are appended or the stream
  /// ends. out grows by at most max(64 KiB, out.size()) ahead of the real data.
  void read(std::vector<std::uint8_t>& out, std::size_t want) {
    while (want > 0 && !finished_) {
      const std::size_t step = std::min(want, std::max<std::size_t>(64 * 1024, out.size()));
      const std::size_t old = out.size();
      out.resize(old + step);
      const std::size_t got = inflate_into(out.data() + old, step);
      out.resize(old + got);
      want -= got;
    }
  }

  /// Inflates and discards the rest of the stream; returns how many bytes that was.
  std::uint64_t skip_rest() {
    std::vector<std::uint8_t> scratch(64 * 1024);
    std::uint64_t n = 0;
    while (!finished_)
      n += inflate_into(scratch.data(), scratch.size());
    return n;
  }

  bool finished() const { return finished_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw io_error(std::string(who_) + ": " + std::string(name_) + ": " + problem);
  }

  // Fills up to n bytes; returns fewer only when the stream has finished.
  std::size_t inflate_into(std::uint8_t* dst, std::size_t n) {
    std::size_t produced = 0;
    while (produced < n && !finished_) {
      if (zs_.avail_in == 0) {
        if (fed_ >= in_.size())
          fail("gzip stream ends early (the .gz file is truncated after " +
               std::to_string(in_.size()) + " bytes)");
        const std::size_t chunk =
            std::min<std::size_t>(in_.size() - fed_, std::numeric_limits<uInt>::max());
        zs_.next_in = const_cast<Bytef*>(in_.data() + fed_);
        zs_.avail_in = static_cast<uInt>(chunk);
        fed_ += chunk;
      }
      const std::size_t room =
          std::min<std::size_t>(n - produced, std::numeric_limits<uInt>::max());
      zs_.next_out = dst + produced;
      zs_.avail_out = static_cast<uInt>(room);
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      produced += room - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        const std::size_t rest = zs_.avail_in + (in_.size() - fed_);
        if (rest == 0) {
          finished_ = true;
        } else if (is_gzip(in_.subspan(in_.size() - rest))) {
          if (inflateReset(&zs_) != Z_OK) fail("zlib could not restart inflating");
        } else {
          fail("corrupt gzip: " + std::to_string(rest) +
               " bytes of trailing garbage after the gzip stream");
        }
      } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
        fail(std::string("corrupt gzip data (zlib: ") + (zs_.msg ? zs_.msg : "data error") + ")");
      } else if (rc == Z_MEM_ERROR) {
        fail("zlib ran out of memory while inflating");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        fail("zlib inflate failed with code " + std::to_string(rc));
      }
      // Z_BUF_ERROR: no progress without more input; the next turn feeds or fails.
    }
    return produced;
  }

  std::span<const std::uint8_t> in_;
  std::string_view name_, who_;
  z_stream zs_{};
  std::size_t fed_ = 0;
  bool finished_ = false;
};

// Deterministic gzip (zlib leaves the header's timestamp at zero).
/// `name` and `who` head its error messages.
inline std::vector<std::uint8_t> gzip_bytes(std::span<const std::uint8_t> in,
                                            const std::string& name,
                                            const std::string& who = "gzip") {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK)
    throw io_error(who + ": " + name + ": zlib could not start deflating");
  std::vector<std::uint8_t> out;
  std::size_t fed = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && fed < in.size()) {
      const std::size_t chunk =
          std::min<std::size_t>(in.size() - fed, std::numeric_limits<uInt>::max());
      zs.next_in = const_cast<Bytef*>(in.data() + fed);
      zs.avail_in = static_cast<uInt>(chunk);
      fed += chunk;
    }
    const std::size_t old = out.size();
    out.resize(old + 64 * 1024);
    zs.next_out = out.data() + old;
    zs.avail_out = 64 * 1024;
    rc = deflate(&zs, fed == in.size() ? Z_FINISH : Z_NO_FLUSH);
    out.resize(old + 64 * 1024 - zs.avail_out);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflateEnd(&zs);
      throw io_error(who + ": " + name + ": zlib deflate failed with code " + std::to_string(rc));
    }
  }
  deflateEnd(&zs);
  return out;
}

}  // namespace siam::io

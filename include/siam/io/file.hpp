// Whole-file reads and atomic writes, shared by every reader and writer in siam.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "siam/error.hpp"

namespace siam::io {

/// The bytes of a file; the allocation is the file's real size. Throws io_error naming
/// `op` and the file if it is missing, a directory or unreadable.
inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path, const char* op) {
  const std::string name = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw io_error(std::string(op) + ": " + name + ": is a directory, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw io_error(std::string(op) + ": " + name + ": cannot open (missing or unreadable)");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw io_error(std::string(op) + ": " + name + ": cannot determine the size");
  f.seekg(0, std::ios::beg);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
    throw io_error(std::string(op) + ": " + name + ": read error");
  return bytes;
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed
/// and fsync'ed, then renamed over `path`. A crash leaves the old file or the new one,
/// never half of one. Throws io_error naming the file; the temporary is removed.
inline void write_file_atomic(const std::filesystem::path& path,
                              std::span<const std::uint8_t> bytes) {
  const std::string tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw io_error(path.string() + ": cannot write (" + std::strerror(errno) + ")");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() &&
                  std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f) == 0;
  std::error_code ec;
  if (!ok || !closed) {
    std::filesystem::remove(tmp, ec);
    throw io_error(path.string() + ": write failed (" + std::strerror(err) + ")");
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw io_error(path.string() +
                   ": cannot rename the temporary file into place: " + ec.message());
  }
}

}  // namespace siam::io

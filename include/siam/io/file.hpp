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

/// Writes a file atomically, its bytes produced by `produce(put)`, which calls
/// put(const void* data, std::size_t n) for each piece in order: a large file is never
/// assembled in memory. A temporary file in the same directory is written, flushed and
/// fsync'ed, then renamed over `path`; a crash leaves the old file or the new one, never
/// half of one. Throws io_error naming the file (the temporary is removed), or what
/// `produce` throws.
template <class Produce>
void write_file_atomic_with(const std::filesystem::path& path, const Produce& produce) {
  const std::string tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw io_error(path.string() + ": cannot write (" + std::strerror(errno) + ")");
  bool ok = true;
  int err = 0;
  auto put = [&](const void* data, std::size_t n) {
    if (ok && n > 0 && std::fwrite(data, 1, n, f) != n) {
      ok = false;
      err = errno;
    }
  };
  try {
    produce(put);
  } catch (...) {
    std::fclose(f);
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  if (ok && (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0)) {
    ok = false;
    err = errno;
  }
  const bool closed = std::fclose(f) == 0;
  std::error_code ec;
  if (!ok || !closed) {
    std::filesystem::remove(tmp, ec);
    throw io_error(path.string() + ": write failed (" + std::strerror(err ? err : errno) + ")");
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw io_error(path.string() +
                   ": cannot rename the temporary file into place: " + ec.message());
  }
}

/// Writes `bytes` to `path` atomically (see write_file_atomic_with).
inline void write_file_atomic(const std::filesystem::path& path,
                              std::span<const std::uint8_t> bytes) {
  write_file_atomic_with(path, [&](auto& put) { put(bytes.data(), bytes.size()); });
}

}  // namespace siam::io

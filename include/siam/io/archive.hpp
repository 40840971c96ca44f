// A small binary archive of named arrays: the model file and checkpoint format.
//
//   "SIAMARCH"  8-byte magic
//   u32         format version (1)
//   u32         number of records
//   per record: u32 name length, name bytes, u32 type (1 = f32, 2 = f64, 3 = u64, 4 = text),
//               u32 rank (0..4), i64 dims[rank], u64 payload bytes, payload
//   u32         CRC-32 (zlib) of every byte before it
// All integers little-endian. Files are written to a temporary name, flushed, synced
// and renamed, so a crash leaves either the old file or the new one, never half of one.
// Reading checks every length against the bytes actually present before allocating.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/file.hpp"

namespace siam::io {

/// Element types of a record; text is UTF-8 bytes (rank 1, one element per byte). i64
/// occurs in safetensors files only (PyTorch's num_batches_tracked); siam's own archives
/// hold types 1 to 4.
enum class ArrayType : std::uint32_t { f32 = 1, f64 = 2, u64 = 3, text = 4, i64 = 5 };

struct Record {
  std::string name;
  ArrayType type = ArrayType::f32;
  std::vector<std::int64_t> dims;
  std::vector<unsigned char> bytes;

  std::size_t element_size() const {
    return type == ArrayType::text ? 1 : (type == ArrayType::f32 ? 4 : 8);
  }
  std::string text() const { return std::string(bytes.begin(), bytes.end()); }
  std::size_t count() const { return bytes.size() / element_size(); }
  template <class V>
  std::vector<V> as() const {
    std::vector<V> v(bytes.size() / sizeof(V));
    if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(V));
    return v;
  }
};

template <class V>
Record make_record(std::string name, std::vector<std::int64_t> dims, const V* data, std::size_t n) {
  static_assert(sizeof(V) == 4 || sizeof(V) == 8);
  Record r;
  r.name = std::move(name);
  r.type = std::is_same_v<V, float>    ? ArrayType::f32
           : std::is_same_v<V, double> ? ArrayType::f64
                                       : ArrayType::u64;
  r.dims = std::move(dims);
  r.bytes.resize(n * sizeof(V));
  if (n) std::memcpy(r.bytes.data(), data, n * sizeof(V));
  return r;
}

inline Record make_text_record(std::string name, const std::string& text) {
  Record r;
  r.name = std::move(name);
  r.type = ArrayType::text;
  r.dims = {static_cast<std::int64_t>(text.size())};
  r.bytes.assign(text.begin(), text.end());
  return r;
}

inline constexpr char archive_magic[8] = {'S', 'I', 'A', 'M', 'A', 'R', 'C', 'H'};
inline constexpr std::uint32_t archive_version = 1;

namespace detail {
template <class I>
void put(std::vector<unsigned char>& out, I v) {
  for (std::size_t i = 0; i < sizeof(I); ++i)
    out.push_back(static_cast<unsigned char>(static_cast<std::uint64_t>(v) >> (8 * i)));
}
class Reader {
 public:
  Reader(const unsigned char* p, std::size_t n, std::string name)
      : p_(p), n_(n), name_(std::move(name)) {}
  template <class I>
  I get(const char* what) {
    need(sizeof(I), what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(I); ++i)
      v |= static_cast<std::uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += sizeof(I);
    return static_cast<I>(v);
  }
  void bytes(void* dst, std::size_t n, const char* what) {
    need(n, what);
    if (n) std::memcpy(dst, p_ + pos_, n);
    pos_ += n;
  }
  void need(std::size_t n, const char* what) const {
    if (n > n_ - pos_)
      throw io_error(name_ + ": truncated or corrupt archive: " + what + " needs " +
                     std::to_string(n) + " bytes at offset " + std::to_string(pos_) + ", only " +
                     std::to_string(n_ - pos_) + " remain");
  }
  std::size_t remaining() const { return n_ - pos_; }

 private:
  const unsigned char* p_;
  std::size_t n_, pos_ = 0;
  std::string name_;
};
}  // namespace detail

/// Serialises records piece by piece: put(const void* data, std::size_t n) receives the
/// archive's bytes in order, the trailing checksum last. Nothing is copied.
template <class Put>
void encode_to(const std::vector<Record>& records, Put&& put) {
  uLong crc = crc32(0L, Z_NULL, 0);
  auto out = [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const Bytef*>(data);
    for (std::size_t done = 0; done < n;) {  // zlib takes 32-bit lengths
      const auto len = static_cast<uInt>(std::min<std::size_t>(n - done, std::size_t{1} << 30));
      crc = crc32(crc, p + done, len);
      done += len;
    }
    put(data, n);
  };
  std::vector<unsigned char> head;  // the fixed-size fields before each payload
  auto flush = [&] {
    out(head.data(), head.size());
    head.clear();
  };
  head.assign(archive_magic, archive_magic + 8);
  detail::put<std::uint32_t>(head, archive_version);
  detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(records.size()));
  for (const auto& r : records) {
    detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(r.name.size()));
    head.insert(head.end(), r.name.begin(), r.name.end());
    detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(r.type));
    detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(r.dims.size()));
    for (auto d : r.dims)
      detail::put<std::int64_t>(head, d);
    detail::put<std::uint64_t>(head, r.bytes.size());
    flush();
    out(r.bytes.data(), r.bytes.size());
  }
  detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(crc));
  put(head.data(), head.size());
}

/// Serialises records to bytes (with the trailing checksum).
inline std::vector<unsigned char> encode(const std::vector<Record>& records) {
  std::vector<unsigned char> bytes;
  encode_to(records, [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    bytes.insert(bytes.end(), p, p + n);
  });
  return bytes;
}

/// Parses bytes; `name` labels error messages. Throws io_error for anything malformed.
inline std::vector<Record> decode(const unsigned char* data, std::size_t size,
                                  const std::string& name) {
  if (size < 8 + 4 + 4 + 4)
    throw io_error(name + ": not a siam archive (only " + std::to_string(size) + " bytes)");
  if (std::memcmp(data, archive_magic, 8) != 0)
    throw io_error(name + ": not a siam archive (wrong magic number)");
  const std::size_t body = size - 4;
  detail::Reader tail(data + body, 4, name);
  const auto stored = tail.get<std::uint32_t>("checksum");
  const auto actual = static_cast<std::uint32_t>(crc32(0L, data, static_cast<uInt>(body)));
  if (stored != actual) throw io_error(name + ": checksum mismatch: the file is corrupt");
  detail::Reader in(data + 8, body - 8, name);
  const auto version = in.get<std::uint32_t>("version");
  if (version != archive_version)
    throw io_error(name + ": unsupported archive version " + std::to_string(version));
  const auto count = in.get<std::uint32_t>("record count");
  std::vector<Record> records;
  for (std::uint32_t i = 0; i < count; ++i) {
    Record r;
    const auto len = in.get<std::uint32_t>("name length");
    in.need(len, "record name");
    r.name.resize(len);
    in.bytes(r.name.data(), len, "record name");
    const auto type = in.get<std::uint32_t>("array type");
    if (type < 1 || type > 4)
      throw io_error(name + ": record '" + r.name + "' has unknown type " + std::to_string(type));
    r.type = static_cast<ArrayType>(type);
    const auto rank = in.get<std::uint32_t>("rank");
    if (rank > 4)
      throw io_error(name + ": record '" + r.name + "' has rank " + std::to_string(rank));
    std::uint64_t elems = 1;
    for (std::uint32_t k = 0; k < rank; ++k) {
      const auto d = in.get<std::int64_t>("dimension");
      if (d < 0 || (d > 0 && elems > (std::uint64_t{1} << 40) / static_cast<std::uint64_t>(d)))
        throw io_error(name + ": record '" + r.name + "' has an impossible dimension " +
                       std::to_string(d));
      elems *= static_cast<std::uint64_t>(d);
      r.dims.push_back(d);
    }
    const auto nbytes = in.get<std::uint64_t>("payload size");
    if (nbytes != elems * r.element_size())
      throw io_error(name + ": record '" + r.name + "' holds " + std::to_string(nbytes) +
                     " bytes, its shape needs " + std::to_string(elems * r.element_size()));
    in.need(static_cast<std::size_t>(nbytes), "payload");
    r.bytes.resize(static_cast<std::size_t>(nbytes));
    in.bytes(r.bytes.data(), r.bytes.size(), "payload");
    records.push_back(std::move(r));
  }
  if (in.remaining() != 0)
    throw io_error(name + ": " + std::to_string(in.remaining()) +
                   " unexpected bytes after the last record");
  return records;
}

/// Writes records straight to the file (atomically: see io/file.hpp), never holding the
/// encoded archive in memory.
inline void save_archive(const std::filesystem::path& path, const std::vector<Record>& records) {
  write_file_atomic_with(path, [&](auto& put) { encode_to(records, put); });
}

/// Reads a whole archive; the file size bounds every allocation.
inline std::vector<Record> load_archive(const std::filesystem::path& path) {
  const auto bytes = read_file(path, "load");
  return decode(bytes.data(), bytes.size(), path.string());
}

}  // namespace siam::io

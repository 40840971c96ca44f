// The safetensors format, which Python (json + numpy), PyTorch and Hugging Face tools read
// directly; this header knows tensors and bytes only (io/state_dict.hpp maps a network to
// named tensors, io/safetensors.hpp joins the two):
//
//   u64 N            little-endian length of the header
//   N bytes          JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//                           ..., "__metadata__": {"<key>": "<value>", ...}}
//                    (padded with spaces so the data starts 8-byte aligned)
//   data             raw little-endian tensors, [b, e) relative to the data's start
//
// Decoding checks every field: the header length against the file size, the JSON syntax,
// dtypes (F32, F64, I64, U64), shapes against data_offsets, offsets inside the data and
// neither overlapping nor leaving gaps (as the reference implementation requires). Any
// problem is an io_error naming the file, the tensor and the values.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/archive.hpp"
#include "siam/io/json.hpp"

namespace siam::io {

/// The tensors and metadata of a safetensors file, as parsed and validated by
/// decode_safetensors (tensor payloads are little-endian, as in the file).
struct SafetensorsFile {
  std::vector<Record> tensors;  // in the order of their data offsets
  std::map<std::string, std::string> metadata;
};

/// Headers above this size are rejected (the reference implementation's limit).
inline constexpr std::uint64_t safetensors_max_header = 100'000'000;

namespace detail {

inline const char* safetensors_dtype(ArrayType t) {
  switch (t) {
    case ArrayType::f32:
      return "F32";
    case ArrayType::f64:
      return "F64";
    case ArrayType::i64:
      return "I64";
    case ArrayType::u64:
      return "U64";
    case ArrayType::text:
      return "U8";
  }
  return "?";
}

/// A parser for exactly the JSON a safetensors header may hold: one object whose values
/// are tensor descriptions or the "__metadata__" object of strings. No recursion, so a
/// hostile header cannot exhaust the stack; every error names the byte offset.
class SafetensorsHeaderParser {
 public:
  SafetensorsHeaderParser(const char* p, std::size_t n, std::string file)
      : p_(p), n_(n), file_(std::move(file)) {}

  struct Entry {
    std::string name, dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
  };

  void parse(std::vector<Entry>& entries, std::map<std::string, std::string>& metadata) {
    std::vector<std::string> seen;
    expect('{');
    if (!try_consume('}')) {
      do {
        std::string key = string();
        if (std::find(seen.begin(), seen.end(), key) != seen.end())
          fail("the key '" + key + "' appears twice");
        seen.push_back(key);
        expect(':');
        if (key == "__metadata__")
          metadata = string_map();
        else
          entries.push_back(entry(std::move(key)));
      } while (try_consume(','));
      expect('}');
    }
    skip_space();
    if (pos_ != n_) fail("unexpected characters after the header object");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(file_ + ": malformed safetensors header at byte " + std::to_string(pos_) + ": " +
                   what);
  }
  void skip_space() {
    while (pos_ < n_ &&
           (p_[pos_] == ' ' || p_[pos_] == '\n' || p_[pos_] == '\r' || p_[pos_] == '\t'))
      ++pos_;
  }
  bool try_consume(char c) {
    skip_space();
    if (pos_ < n_ && p_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!try_consume(c))
      fail(std::string("expected '") + c + "', found " +
           (pos_ < n_ ? "'" + std::string(1, p_[pos_]) + "'" : "the end of the header"));
  }
  std::string string() {
    expect('"');
    std::string s;
    while (true) {
      if (pos_ >= n_) fail("unterminated string");
      const char c = p_[pos_++];
      if (c == '"') return s;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        s += c;
        continue;
      }
      if (pos_ >= n_) fail("unterminated escape");
      const char e = p_[pos_++];
      switch (e) {
        case '"':
          s += '"';
          break;
        case '\\':
          s += '\\';
          break;
        case '/':
          s += '/';
          break;
        case 'b':
          s += '\b';
          break;
        case 'f':
          s += '\f';
          break;
        case 'n':
          s += '\n';
          break;
        case 'r':
          s += '\r';
          break;
        case 't':
          s += '\t';
          break;
        case 'u': {
          if (n_ - pos_ < 4) fail("truncated \\u escape");
          unsigned v = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = p_[pos_++];
            v = v * 16 + static_cast<unsigned>(h >= '0' && h <= '9'   ? h - '0'
                                               : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                               : h >= 'A' && h <= 'F'
                                                   ? h - 'A' + 10
                                                   : (fail("bad \\u escape"), 0));
          }
          if (v >= 0xD800 && v < 0xE000) fail("surrogate \\u escapes are not supported");
          // UTF-8 encode the code point.
          if (v < 0x80) {
            s += static_cast<char>(v);
          } else if (v < 0x800) {
            s += static_cast<char>(0xC0 | (v >> 6));
            s += static_cast<char>(0x80 | (v & 0x3F));
          } else {
            s += static_cast<char>(0xE0 | (v >> 12));
            s += static_cast<char>(0x80 | ((v >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (v & 0x3F));
          }
          break;
        }
        default:
          fail(std::string("unknown escape '\\") + e + "'");
      }
    }
  }
  /// A non-negative integer below 2^53 (what JSON numbers hold exactly).
  std::uint64_t integer() {
    skip_space();
    const std::size_t start = pos_;
    std::uint64_t v = 0;
    while (pos_ < n_ && p_[pos_] >= '0' && p_[pos_] <= '9') {
      v = v * 10 + static_cast<std::uint64_t>(p_[pos_++] - '0');
      if (v >= (std::uint64_t{1} << 53)) fail("integer too large");
    }
    if (pos_ == start) fail("expected a non-negative integer");
    if (pos_ - start > 1 && p_[start] == '0') fail("integer with a leading zero");
    if (pos_ < n_ && (p_[pos_] == '.' || p_[pos_] == 'e' || p_[pos_] == 'E'))
      fail("expected an integer, found a fraction or exponent");
    return v;
  }
  std::vector<std::uint64_t> integers() {
    std::vector<std::uint64_t> v;
    expect('[');
    if (try_consume(']')) return v;
    do {
      if (v.size() >= 8) fail("array of more than 8 integers");
      v.push_back(integer());
    } while (try_consume(','));
    expect(']');
    return v;
  }
  std::map<std::string, std::string> string_map() {
    std::map<std::string, std::string> m;
    expect('{');
    if (try_consume('}')) return m;
    do {
      std::string k = string();
      expect(':');
      if (!m.emplace(k, string()).second) fail("metadata key '" + k + "' appears twice");
    } while (try_consume(','));
    expect('}');
    return m;
  }
  Entry entry(std::string name) {
    Entry e;
    e.name = std::move(name);
    bool dtype = false, shape = false, offsets = false;
    expect('{');
    do {
      const std::string k = string();
      expect(':');
      bool* flag = k == "dtype"          ? &dtype
                   : k == "shape"        ? &shape
                   : k == "data_offsets" ? &offsets
                                         : nullptr;
      if (!flag) fail("tensor '" + e.name + "' has an unknown field '" + k + "'");
      if (*flag) fail("tensor '" + e.name + "' has the field '" + k + "' twice");
      *flag = true;
      if (k == "dtype") {
        e.dtype = string();
      } else if (k == "shape") {
        for (auto d : integers())
          e.shape.push_back(static_cast<std::int64_t>(d));
      } else {
        const auto o = integers();
        if (o.size() != 2) fail("tensor '" + e.name + "': data_offsets must hold 2 integers");
        e.begin = o[0];
        e.end = o[1];
      }
    } while (try_consume(','));
    expect('}');
    if (!dtype || !shape || !offsets)
      fail("tensor '" + e.name + "' lacks " +
           (!dtype   ? "dtype"
            : !shape ? "shape"
                     : "data_offsets"));
    return e;
  }

  const char* p_;
  std::size_t n_, pos_ = 0;
  std::string file_;
};

inline std::string dims_string(const std::vector<std::int64_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i < d.size(); ++i)
    s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace detail

/// Serialises tensors (payloads little-endian, F32/F64/I64/U64) and string metadata.
inline std::vector<std::uint8_t> encode_safetensors(
    const std::vector<Record>& tensors, const std::map<std::string, std::string>& metadata = {}) {
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      h += (first ? "" : ",") + ("\"" + io::json_escape(k) + "\":\"" + io::json_escape(v) + "\"");
      first = false;
    }
    h += "}";
    first = false;
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__")
      throw value_error("encode_safetensors: '__metadata__' is reserved");
    const std::uint64_t end = offset + t.bytes.size();
    h += (first ? "\"" : ",\"") + io::json_escape(t.name) + "\":{\"dtype\":\"" +
         detail::safetensors_dtype(t.type) + "\",\"shape\":" + detail::dims_string(t.dims) +
         ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    first = false;
    offset = end;
  }
  h += "}";
  while ((8 + h.size()) % 8 != 0)
    h += ' ';
  std::vector<std::uint8_t> out;
  out.reserve(8 + h.size() + offset);
  detail::put<std::uint64_t>(out, h.size());
  out.insert(out.end(), h.begin(), h.end());
  for (const auto& t : tensors)
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

/// Parses and validates a safetensors file held in memory; `name` labels errors. Tensors of
/// dtypes other than F32, F64, I64 and U64 are rejected (siam has no other element types).
inline SafetensorsFile decode_safetensors(const unsigned char* data, std::size_t size,
                                          const std::string& name) {
  if (size < 8)
    throw io_error(name + ": not a safetensors file (only " + std::to_string(size) + " bytes)");
  detail::Reader in(data, size, name);
  const auto n = in.get<std::uint64_t>("header length");
  if (n > size - 8 || n > safetensors_max_header)
    throw io_error(name + ": safetensors header length " + std::to_string(n) +
                   " exceeds the file (" + std::to_string(size) + " bytes) or the limit of " +
                   std::to_string(safetensors_max_header));
  if (n < 2 || data[8] != '{')
    throw io_error(name + ": not a safetensors file (the header does not start with '{')");
  std::vector<detail::SafetensorsHeaderParser::Entry> entries;
  SafetensorsFile out;
  detail::SafetensorsHeaderParser(reinterpret_cast<const char*>(data + 8),
                                  static_cast<std::size_t>(n), name)
      .parse(entries, out.metadata);

  const unsigned char* body = data + 8 + n;
  const std::uint64_t body_size = size - 8 - n;
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  std::uint64_t expected_begin = 0;
  for (auto& e : entries) {
    const std::string t = name + ": tensor '" + e.name + "'";
    Record r;
    r.name = e.name;
    if (e.dtype == "F32")
      r.type = ArrayType::f32;
    else if (e.dtype == "F64")
      r.type = ArrayType::f64;
    else if (e.dtype == "I64")
      r.type = ArrayType::i64;
    else if (e.dtype == "U64")
      r.type = ArrayType::u64;
    else
      throw io_error(t + " has dtype '" + e.dtype + "'; siam reads F32, F64, I64 and U64");
    if (e.shape.size() > 4)
      throw io_error(t + " has rank " + std::to_string(e.shape.size()) + " (siam's limit is 4)");
    std::uint64_t elems = 1;
    for (const auto d : e.shape) {
      const auto ud = static_cast<std::uint64_t>(d);
      if (ud > 0 && elems > (std::uint64_t{1} << 40) / ud)
        throw io_error(t + " has an impossible shape " + detail::dims_string(e.shape));
      elems *= ud;
    }
    if (e.begin > e.end || e.end > body_size)
      throw io_error(t + " has data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + "] outside the " + std::to_string(body_size) +
                     " data bytes");
    if (e.end - e.begin != elems * r.element_size())
      throw io_error(t + ": data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + "] hold " + std::to_string(e.end - e.begin) +
                     " bytes, its shape " + detail::dims_string(e.shape) + " of " + e.dtype +
                     " needs " + std::to_string(elems * r.element_size()));
    if (e.begin != expected_begin)
      throw io_error(t + " starts at data offset " + std::to_string(e.begin) + ", expected " +
                     std::to_string(expected_begin) +
                     (e.begin < expected_begin ? " (it overlaps another tensor)" : " (a gap)"));
    expected_begin = e.end;
    r.dims = e.shape;
    r.bytes.assign(body + e.begin, body + e.end);
    out.tensors.push_back(std::move(r));
  }
  if (expected_begin != body_size)
    throw io_error(name + ": the tensors cover " + std::to_string(expected_begin) + " of the " +
                   std::to_string(body_size) + " data bytes");
  return out;
}

}  // namespace siam::io

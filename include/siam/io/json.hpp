// JSON string escaping, for the small JSON texts the library and its programs write
// (safetensors headers, metrics files): quotes and backslashes escaped, control characters
// as \u00XX, every other byte (UTF-8 included) as it is.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace siam::io {

/// `s` escaped for use between the quotes of a JSON string.
inline std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace siam::io

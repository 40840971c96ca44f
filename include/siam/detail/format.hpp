// Numbers in messages and descriptions: the shortest text that reads back as the same
// double (std::to_string would print 1e-08 as "0.000000").
#pragma once

#include <charconv>
#include <string>
#include <string_view>
#include <system_error>

namespace siam::detail {

/// Shortest round-trip form of v ("0.001", "1e-08", "inf", "nan").
inline std::string fmt(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

/// Parses the whole of `s` as a double; false if anything is left over or it is empty.
inline bool parse_double(std::string_view s, double& out) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

/// Parses the whole of `s` as a long long; false if anything is left over or it is empty.
inline bool parse_integer(std::string_view s, long long& out) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

}  // namespace siam::detail

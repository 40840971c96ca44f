// A layer's kind and settings as plain data: what a self-describing model file stores
// for each layer (one line of text, "Dense in=784 out=1024"), and what the layer
// registry (nn/registry.hpp) builds a layer from.
#pragma once

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "siam/error.hpp"

namespace siam::nn {

struct LayerSpec {
  /// The largest size a setting may give (channels, features, dimensions).
  static constexpr std::int64_t max_size = std::int64_t{1} << 31;

  std::string kind;
  std::vector<std::pair<std::string, double>> args;  // in order

  LayerSpec& set(std::string key, double value) {
    args.emplace_back(std::move(key), value);
    return *this;
  }
  bool has(const std::string& key) const {
    for (const auto& [k, v] : args)
      if (k == key) return true;
    return false;
  }
  /// The value of `key`; throws value_error naming the layer if it is absent.
  double get(const std::string& key) const {
    for (const auto& [k, v] : args)
      if (k == key) return v;
    throw value_error("layer " + str() + ": missing setting '" + key + "'");
  }
  /// An integer setting in [lo, hi]; throws value_error naming the layer and value.
  std::int64_t get_int(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const double v = get(key);
    if (!(v >= double(lo) && v <= double(hi)) || v != std::floor(v))
      throw value_error("layer " + str() + ": setting " + key + " = " + std::to_string(v) +
                        " is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                        "]");
    return static_cast<std::int64_t>(v);
  }

  /// "Kind key=value key=value" (values printed exactly: integers as integers, others
  /// with 17 significant digits).
  std::string str() const {
    std::ostringstream s;
    s.precision(17);
    s << kind;
    for (const auto& [k, v] : args)
      s << ' ' << k << '=' << v;
    return s.str();
  }
  /// Parses str()'s format; throws value_error naming the line.
  static LayerSpec parse(const std::string& line) {
    std::istringstream in(line);
    LayerSpec spec;
    if (!(in >> spec.kind)) throw value_error("layer spec: empty line");
    for (std::string item; in >> item;) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        throw value_error("layer spec '" + line + "': expected key=value, got '" + item + "'");
      const std::string v = item.substr(eq + 1);
      std::size_t used = 0;
      double value = 0;
      try {
        value = std::stod(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || v.empty() || !std::isfinite(value))
        throw value_error("layer spec '" + line + "': bad number '" + v + "'");
      spec.set(item.substr(0, eq), value);
    }
    return spec;
  }
};

}  // namespace siam::nn

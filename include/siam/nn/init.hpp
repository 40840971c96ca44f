// Weight initialisation, drawn on the host from an explicit generator in double
// precision and rounded once, so the same seed gives bit-identical weights.
#pragma once

#include <cmath>
#include <vector>

#include "siam/random.hpp"
#include "siam/tensor.hpp"

namespace siam::nn {

enum class Init {
  he,             ///< W ~ Normal(0, sqrt(2 / fan_in)), for ReLU networks
  glorot_uniform  ///< W ~ Uniform(-a, a), a = sqrt(6 / (fan_in + fan_out))
};

template <class T, class B>
Tensor<T, B> init_weights(index_t fan_in, index_t fan_out, Init init, Rng& rng) {
  if (fan_in <= 0 || fan_out <= 0)
    throw value_error("init_weights: sizes must be positive, got " + std::to_string(fan_in) +
                      " x " + std::to_string(fan_out));
  std::vector<T> w(static_cast<std::size_t>(fan_in * fan_out));
  if (init == Init::he) {
    const double sd = std::sqrt(2.0 / static_cast<double>(fan_in));
    for (auto& x : w)
      x = static_cast<T>(rng.normal(0.0, sd));
  } else {
    const double a = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
    for (auto& x : w)
      x = static_cast<T>(rng.uniform(-a, a));
  }
  return Tensor<T, B>::from(Shape{fan_in, fan_out}, std::span<const T>(w));
}

}  // namespace siam::nn

// Builds layers from their specs (nn/spec.hpp): how a self-describing model file turns
// back into a network. Every layer kind the library has is listed here once.
#pragma once

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "siam/nn/layers.hpp"

namespace siam::nn {

/// A new layer of the kind and settings of `spec`, with freshly initialised parameters
/// (a model file then loads its weights into them). Throws value_error for an unknown
/// kind or a setting out of range, naming the spec.
template <class T, class B>
std::unique_ptr<Layer<T, B>> make_layer(const LayerSpec& spec, Rng& rng) {
  constexpr std::int64_t big = std::int64_t{1} << 31;
  if (spec.kind == "Dense")
    return std::make_unique<Dense<T, B>>(spec.get_int("in", 1, big), spec.get_int("out", 1, big),
                                         rng);
  if (spec.kind == "ReLU") return std::make_unique<ReLU<T, B>>();
  if (spec.kind == "Tanh") return std::make_unique<Tanh<T, B>>();
  if (spec.kind == "Sigmoid") return std::make_unique<Sigmoid<T, B>>();
  if (spec.kind == "L2Normalize") return std::make_unique<L2Normalize<T, B>>(spec.get("eps"));
  throw value_error("unknown layer kind in '" + spec.str() +
                    "' (known: Dense, ReLU, Tanh, Sigmoid, L2Normalize)");
}

/// The specs of every layer of `net`, in order.
template <class T, class B>
std::vector<LayerSpec> specs(const Sequential<T, B>& net) {
  std::vector<LayerSpec> out;
  for (std::size_t i = 0; i < net.size(); ++i)
    out.push_back(net[i].spec());
  return out;
}

/// A network of the given layers (parameters initialised from `rng`).
template <class T, class B>
Sequential<T, B> build(const std::vector<LayerSpec>& layers, Shape input_shape, Rng& rng) {
  Sequential<T, B> net;
  for (const auto& l : layers)
    net.add(make_layer<T, B>(l, rng));
  net.set_input_shape(input_shape);
  return net;
}

}  // namespace siam::nn

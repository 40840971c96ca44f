// Builds layers from their specs (nn/spec.hpp): how a self-describing model file turns
// back into a network. Every layer kind the library has is listed here once.
#pragma once

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "siam/nn/conv.hpp"
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
  if (spec.kind == "Conv2D")
    return std::make_unique<Conv2D<T, B>>(
        spec.get_int("in", 1, big), spec.get_int("out", 1, big), spec.get_int("kernel", 1, 4096),
        rng, spec.get_int("stride", 1, 4096), spec.get_int("padding", 0, 4096),
        spec.get_int("bias", 0, 1) == 1);
  if (spec.kind == "MaxPool2D")
    return std::make_unique<MaxPool2D<T, B>>(spec.get_int("kernel", 1, 4096),
                                             spec.get_int("stride", 1, 4096));
  if (spec.kind == "Flatten") return std::make_unique<Flatten<T, B>>();
  if (spec.kind == "Reshape")
    return std::make_unique<Reshape<T, B>>(spec.get_int("d1", 1, big), spec.get_int("d2", 1, big),
                                           spec.get_int("d3", 1, big));
  throw value_error("unknown layer kind in '" + spec.str() +
                    "' (known: Dense, ReLU, Tanh, Sigmoid, L2Normalize, Conv2D, MaxPool2D, "
                    "Flatten, Reshape)");
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

namespace siam::nn {

/// The layers of nn::lenet (Caffe's mnist_siamese LeNet, `embedding`-D output) as specs,
/// for configurations that name an architecture (SiameseConfig::network); the input is
/// [1 x 28 x 28], so the leading Reshape is left out.
inline std::vector<LayerSpec> lenet_specs(index_t embedding = 2) {
  std::vector<LayerSpec> l;
  for (auto [in, out] : {std::pair{1, 20}, std::pair{20, 50}}) {
    l.push_back(LayerSpec{"Conv2D", {}}
                    .set("in", in)
                    .set("out", out)
                    .set("kernel", 5)
                    .set("stride", 1)
                    .set("padding", 0)
                    .set("bias", 1));
    l.push_back({"ReLU", {}});
    l.push_back(LayerSpec{"MaxPool2D", {}}.set("kernel", 2).set("stride", 2));
  }
  l.push_back({"Flatten", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", 800).set("out", 500));
  l.push_back({"ReLU", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", 500).set("out", double(embedding)));
  return l;
}

}  // namespace siam::nn

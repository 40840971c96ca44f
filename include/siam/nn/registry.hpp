// Builds layers from their specs (nn/spec.hpp): how a self-describing model file turns
// back into a network. Each layer kind registers itself in its own class (its `kind`
// name and `from_spec` builder beside output_shape, emit and tensor_names: see the
// comment at the top of nn/layers.hpp); this header only lists the kinds, once, in
// `layer_kinds`. A kind that lacks a piece does not compile (LayerKind below).
#pragma once

#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "siam/nn/batchnorm.hpp"
#include "siam/nn/conv.hpp"
#include "siam/nn/dropout.hpp"
#include "siam/nn/layers.hpp"
#include "siam/nn/pooling.hpp"
#include "siam/nn/residual.hpp"

namespace siam::nn {

/// A list of layer kinds (class templates over scalar and backend).
template <template <class, class> class... L>
struct LayerKinds {};

/// The layer kinds the library knows, in the order "known:" lists them.
using layer_kinds = LayerKinds<Dense, ReLU, Tanh, Sigmoid, L2Normalize, Conv2D, MaxPool2D, Flatten,
                               Reshape, BatchNorm, Dropout, GlobalAvgPool, AvgPool2D, Residual>;

/// What a registered layer kind provides: a concrete Layer with a `kind` name and a
/// `from_spec` builder (the other pieces are Layer's pure functions).
template <template <class, class> class L, class T, class B>
concept LayerKind = std::derived_from<L<T, B>, Layer<T, B>> && !std::is_abstract_v<L<T, B>> &&
                    requires(const LayerSpec& s, Rng& rng) {
  {std::string_view(L<T, B>::kind)};
  { L<T, B>::from_spec(s, rng) } -> std::same_as<std::unique_ptr<Layer<T, B>>>;
};

namespace detail {
template <template <class, class> class L, class T, class B>
constexpr bool check_kind() {
  static_assert(std::derived_from<L<T, B>, Layer<T, B>>, "a layer kind must derive from Layer");
  static_assert(!std::is_abstract_v<L<T, B>>,
                "a layer kind must override every pure function of Layer (forward, "
                "output_shape, parameters, tensor_names, describe, spec, emit)");
  static_assert(LayerKind<L, T, B>,
                "a layer kind needs `static constexpr const char* kind` and `static "
                "std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&)`");
  return true;
}

template <class T, class B, template <class, class> class... L>
std::unique_ptr<Layer<T, B>> make_from(LayerKinds<L...>, const LayerSpec& spec, Rng& rng) {
  static_assert((check_kind<L, T, B>() && ...));
  std::unique_ptr<Layer<T, B>> out;
  (void)((spec.kind == L<T, B>::kind ? (out = L<T, B>::from_spec(spec, rng), true) : false) || ...);
  return out;
}

template <class T, class B, template <class, class> class... L>
std::vector<std::string> kind_names(LayerKinds<L...>) {
  return {std::string(L<T, B>::kind)...};
}
}  // namespace detail

/// The names of every known layer kind.
template <class T, class B>
std::vector<std::string> layer_kind_names() {
  return detail::kind_names<T, B>(layer_kinds{});
}

/// A new layer of the kind and settings of `spec`, with freshly initialised parameters
/// (a model file then loads its weights into them). Throws value_error for an unknown
/// kind (listing the known ones) or a setting out of range, naming the spec. `Extra`
/// (a LayerKinds<...>) adds a program's own kinds, looked up first.
template <class T, class B, class Extra = LayerKinds<>>
std::unique_ptr<Layer<T, B>> make_layer(const LayerSpec& spec, Rng& rng) {
  auto layer = detail::make_from<T, B>(Extra{}, spec, rng);
  if (!layer) layer = detail::make_from<T, B>(layer_kinds{}, spec, rng);
  if (!layer) {
    std::string known;
    for (const auto& k : detail::kind_names<T, B>(Extra{}))
      known += (known.empty() ? "" : ", ") + k;
    for (const auto& k : layer_kind_names<T, B>())
      known += (known.empty() ? "" : ", ") + k;
    throw value_error("unknown layer kind in '" + spec.str() + "' (known: " + known + ")");
  }
  return layer;
}

namespace detail {
// A container's line (a Residual's) is followed by its children's lines (depth first).
template <class T, class B>
void append_specs(const Sequential<T, B>& net, std::vector<LayerSpec>& out) {
  for (std::size_t i = 0; i < net.size(); ++i) {
    out.push_back(net[i].spec());
    const Layer<T, B>& layer = net[i];
    for (const auto* child : layer.children())
      append_specs(*child, out);
  }
}
// The layer at layers[i] (and, for a container, the layers its line announces); advances i.
template <class T, class B, class Extra>
std::unique_ptr<Layer<T, B>> build_one(const std::vector<LayerSpec>& layers, std::size_t& i,
                                       Rng& rng) {
  const LayerSpec& spec = layers[i++];
  auto layer = make_layer<T, B, Extra>(spec, rng);
  const auto children = layer->children();
  const auto pending = layer->pending_children();
  if (pending.size() != children.size())
    throw value_error("layer " + spec.str() + ": " + std::to_string(children.size()) +
                      " children but " + std::to_string(pending.size()) + " pending counts");
  for (std::size_t c = 0; c < children.size(); ++c)
    for (std::size_t k = pending[c]; k > 0; --k) {
      if (i >= layers.size())
        throw value_error("layer " + spec.str() + ": the list ends before its layers");
      children[c]->add(build_one<T, B, Extra>(layers, i, rng));
    }
  return layer;
}
}  // namespace detail

/// The specs of every layer of `net`, in order (a Residual's line followed by its layers').
template <class T, class B>
std::vector<LayerSpec> specs(const Sequential<T, B>& net) {
  std::vector<LayerSpec> out;
  detail::append_specs(net, out);
  return out;
}

/// A network of the given layers (parameters initialised from `rng`). With an input
/// shape (size > 0) every layer's shapes are checked here: shape_error naming the first
/// layer that does not fit, its input shape and what it expects.
template <class T, class B, class Extra = LayerKinds<>>
Sequential<T, B> build(const std::vector<LayerSpec>& layers, Shape input_shape, Rng& rng) {
  Sequential<T, B> net;
  for (std::size_t i = 0; i < layers.size();)
    net.add(detail::build_one<T, B, Extra>(layers, i, rng));
  net.set_input_shape(input_shape);
  if (input_shape.size() > 0) (void)net.output_shape(input_shape);
  return net;
}

}  // namespace siam::nn

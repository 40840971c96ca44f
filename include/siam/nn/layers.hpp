// Layers composed at run time. A network is a Sequential holding concrete layers
// behind one small virtual interface: no network is ever encoded in nested template
// types, so models build fast and error messages stay short.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/ops.hpp"
#include "siam/nn/init.hpp"

namespace siam::nn {

template <class T, class B>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual Var<T, B> forward(Var<T, B> x) = 0;
  virtual std::vector<Parameter<T, B>*> parameters() { return {}; }
  virtual std::string describe() const = 0;
};

/// y = x W + b with W [in x out], b [out]. Default initialisation: He (b = 0).
template <class T, class B>
class Dense final : public Layer<T, B> {
 public:
  Dense(index_t in, index_t out, Rng& rng, Init init = Init::he)
      : w_("W", init_weights<T, B>(in, out, init, rng)), b_("b", Tensor<T, B>(Shape{out})) {}

  Var<T, B> forward(Var<T, B> x) override {
    return linear(x, x.tape().param(w_), x.tape().param(b_));
  }
  /// relu(x W + b) as one fused op (what Sequential uses for Dense followed by ReLU).
  Var<T, B> forward_relu(Var<T, B> x) {
    return linear_relu(x, x.tape().param(w_), x.tape().param(b_));
  }
  std::vector<Parameter<T, B>*> parameters() override { return {&w_, &b_}; }
  std::string describe() const override {
    return "Dense(" + std::to_string(w_.value.shape()[0]) + ", " +
           std::to_string(w_.value.shape()[1]) + ")";
  }
  Parameter<T, B>& weight() { return w_; }
  Parameter<T, B>& bias() { return b_; }

 private:
  Parameter<T, B> w_, b_;
};

template <class T, class B>
class ReLU final : public Layer<T, B> {
 public:
  Var<T, B> forward(Var<T, B> x) override { return relu(x); }
  std::string describe() const override { return "ReLU"; }
};

/// Layers applied in order. A Dense directly followed by a ReLU runs as one fused
/// linear_relu op (same result, one pass less each way).
template <class T, class B>
class Sequential final : public Layer<T, B> {
 public:
  Sequential() = default;

  template <class L, class... Args>
  Sequential& add(Args&&... args) {
    layers_.push_back(std::make_unique<L>(std::forward<Args>(args)...));
    return *this;
  }
  Sequential& add(std::unique_ptr<Layer<T, B>> layer) {
    layers_.push_back(std::move(layer));
    return *this;
  }

  Var<T, B> forward(Var<T, B> x) override {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      auto* dense = dynamic_cast<Dense<T, B>*>(layers_[i].get());
      if (dense && i + 1 < layers_.size() && dynamic_cast<ReLU<T, B>*>(layers_[i + 1].get())) {
        x = dense->forward_relu(x);
        ++i;
      } else {
        x = layers_[i]->forward(x);
      }
    }
    return x;
  }
  std::vector<Parameter<T, B>*> parameters() override {
    std::vector<Parameter<T, B>*> ps;
    for (auto& l : layers_)
      for (auto* p : l->parameters())
        ps.push_back(p);
    return ps;
  }
  std::string describe() const override {
    std::string s = "Sequential(";
    for (std::size_t i = 0; i < layers_.size(); ++i)
      s += (i ? ", " : "") + layers_[i]->describe();
    return s + ")";
  }
  std::size_t size() const { return layers_.size(); }
  Layer<T, B>& operator[](std::size_t i) { return *layers_.at(i); }

 private:
  std::vector<std::unique_ptr<Layer<T, B>>> layers_;
};

/// The classic Siamese embedding network: in -> Dense(h) -> ReLU -> ... -> Dense(out).
template <class T, class B>
Sequential<T, B> mlp(const std::vector<index_t>& sizes, Rng& rng, Init init = Init::he) {
  if (sizes.size() < 2) throw value_error("mlp: needs at least an input and an output size");
  Sequential<T, B> net;
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
    net.template add<Dense<T, B>>(sizes[i], sizes[i + 1], rng, init);
    if (i + 2 < sizes.size()) net.template add<ReLU<T, B>>();
  }
  return net;
}

}  // namespace siam::nn

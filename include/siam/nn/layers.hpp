// Layers composed at run time. A network is a Sequential holding concrete layers
// behind one small virtual interface: no network is ever encoded in nested template
// types, so models build fast and error messages stay short.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/elementwise.hpp"
#include "siam/autodiff/metric.hpp"
#include "siam/autodiff/ops.hpp"
#include "siam/autodiff/reduce.hpp"
#include "siam/autodiff/structure.hpp"
#include "siam/nn/init.hpp"
#include "siam/nn/spec.hpp"

namespace siam::nn {

template <class T, class B>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual Var<T, B> forward(Var<T, B> x) = 0;
  virtual std::vector<Parameter<T, B>*> parameters() { return {}; }
  virtual std::string describe() const = 0;
  /// Kind and settings, for self-describing model files (see nn/registry.hpp). A layer
  /// that cannot be rebuilt from settings alone throws value_error.
  virtual LayerSpec spec() const {
    throw value_error("layer " + describe() + " cannot be saved in a model file (no spec())");
  }

 protected:
  Layer() = default;
  Layer(const Layer&) = default;
  Layer& operator=(const Layer&) = default;
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
  LayerSpec spec() const override {
    return LayerSpec{"Dense", {}}
        .set("in", double(w_.value.shape()[0]))
        .set("out", double(w_.value.shape()[1]));
  }
  index_t in_features() const { return w_.value.shape()[0]; }
  index_t out_features() const { return w_.value.shape()[1]; }
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
  LayerSpec spec() const override { return {"ReLU", {}}; }
};

template <class T, class B>
class Tanh final : public Layer<T, B> {
 public:
  Var<T, B> forward(Var<T, B> x) override { return tanh(x); }
  std::string describe() const override { return "Tanh"; }
  LayerSpec spec() const override { return {"Tanh", {}}; }
};

template <class T, class B>
class Sigmoid final : public Layer<T, B> {
 public:
  Var<T, B> forward(Var<T, B> x) override { return sigmoid(x); }
  std::string describe() const override { return "Sigmoid"; }
  LayerSpec spec() const override { return {"Sigmoid", {}}; }
};

/// Each row scaled to unit L2 norm, x / max(|x|, eps): embeddings on the sphere (what
/// cosine-based losses and retrieval by cosine expect).
template <class T, class B>
class L2Normalize final : public Layer<T, B> {
 public:
  explicit L2Normalize(double eps = 1e-12) : eps_(eps) {
    if (!(eps > 0)) throw value_error("L2Normalize: eps must be > 0, got " + std::to_string(eps));
  }
  Var<T, B> forward(Var<T, B> x) override { return l2_normalize_rows(x, static_cast<T>(eps_)); }
  std::string describe() const override { return "L2Normalize"; }
  LayerSpec spec() const override { return LayerSpec{"L2Normalize", {}}.set("eps", eps_); }
  double eps() const { return eps_; }

 private:
  double eps_;
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
  LayerSpec spec() const override {
    throw value_error("Sequential: a nested Sequential cannot be saved; flatten it");
  }
  std::size_t size() const { return layers_.size(); }
  Layer<T, B>& operator[](std::size_t i) { return *layers_.at(i); }
  const Layer<T, B>& operator[](std::size_t i) const { return *layers_.at(i); }

  /// The shape of one input example ([784] for an MLP on MNIST, [1 x 28 x 28] for a
  /// convolutional network); a batch is [N x that]. Empty (size 0) until set.
  Shape input_shape() const { return input_shape_; }
  Sequential& set_input_shape(Shape s) {
    input_shape_ = s;
    return *this;
  }

  /// Inference without a caller's tape: runs the network on a batch x [N x input shape]
  /// (or any shape with N rows and the input's size per row) with no gradients, reusing
  /// the network's own buffers (no allocation once a batch size has been seen). The
  /// result is a view of those buffers, valid until the next embed() call.
  View<T, B> embed(const View<T, B>& x) {
    if (!infer_) infer_ = std::make_unique<Tape<T, B>>();
    Tape<T, B>& t = *infer_;
    t.reset();
    NoGrad<T, B> no_grad(t);
    const Shape s = x.shape();
    Var<T, B> in = t.constant(x);
    if (input_shape_.size() > 0 && s.rank() >= 2 && !(s == batch_shape(s.rows()))) {
      if (s.cols() != input_shape_.size())
        throw shape_error("embed: a batch " + s.str() + " for a network whose input is " +
                          input_shape_.str());
      in = reshape(in, batch_shape(s.rows()));
    }
    return forward(in).value();
  }
  View<T, B> embed(const Tensor<T, B>& x) {
    return embed(View<T, B>(const_cast<T*>(x.data()), x.shape()));
  }
  /// [n x input shape] (or [n x input size] when the input shape is unset).
  Shape batch_shape(index_t n) const {
    const Shape s = input_shape_;
    switch (s.rank()) {
      case 1:
        return Shape{n, s[0]};
      case 2:
        return Shape{n, s[0], s[1]};
      default:
        return Shape{n, s[0], s[1], s[2]};
    }
  }

 private:
  std::vector<std::unique_ptr<Layer<T, B>>> layers_;
  Shape input_shape_;
  std::unique_ptr<Tape<T, B>> infer_;
};

/// The classic Siamese embedding network: in -> Dense(h) -> ReLU -> ... -> Dense(out).
template <class T, class B>
Sequential<T, B> mlp(const std::vector<index_t>& sizes, Rng& rng, Init init = Init::he) {
  if (sizes.size() < 2) throw value_error("mlp: needs at least an input and an output size");
  Sequential<T, B> net;
  net.set_input_shape(Shape{sizes.front()});
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
    net.template add<Dense<T, B>>(sizes[i], sizes[i + 1], rng, init);
    if (i + 2 < sizes.size()) net.template add<ReLU<T, B>>();
  }
  return net;
}

}  // namespace siam::nn

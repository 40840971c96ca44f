// BatchNorm: batch normalisation over features ([N x C], after Dense) or channels
// ([N x C x H x W], after Conv2D), PyTorch's BatchNorm1d/2d. In training mode it normalises
// with the batch's statistics and updates running ones (momentum); in inference mode it uses
// the running ones. A Siamese batch stacks both branches, so its statistics cover both.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/batchnorm.hpp"
#include "siam/nn/layers.hpp"

namespace siam::nn {

/// y = weight (x - mean) / sqrt(var + eps) + bias per channel; weight = 1, bias = 0 at
/// first; running mean 0, variance 1, updated in training as
///   running <- (1 - momentum) running + momentum batch   (unbiased batch variance).
/// Buffers (saved, never trained): running_mean, running_var, num_batches_tracked.
/// Throws value_error for features < 1, eps <= 0 or momentum outside [0, 1].
template <class T, class B>
class BatchNorm final : public Layer<T, B> {
 public:
  static constexpr const char* kind = "BatchNorm";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    return std::make_unique<BatchNorm>(s.get_int("features", 1, LayerSpec::max_size), s.get("eps"),
                                       s.get("momentum"));
  }

  explicit BatchNorm(index_t features, double eps = 1e-5, double momentum = 0.1)
      : c_(features), eps_(eps), momentum_(momentum) {
    if (c_ < 1 || !(eps > 0) || !(momentum >= 0 && momentum <= 1))
      throw value_error("BatchNorm: features " + std::to_string(c_) + ", eps " +
                        std::to_string(eps) + ", momentum " + std::to_string(momentum) +
                        ": features must be positive, eps > 0, momentum in [0, 1]");
    Tensor<T, B> one(Shape{c_});
    one.fill(T(1));
    Tensor<T, B> var(Shape{c_});
    var.fill(T(1));
    w_ = Parameter<T, B>("weight", std::move(one));
    b_ = Parameter<T, B>("bias", Tensor<T, B>(Shape{c_}));
    mean_ = Parameter<T, B>("running_mean", Tensor<T, B>(Shape{c_}));
    var_ = Parameter<T, B>("running_var", std::move(var));
    count_ = Parameter<T, B>("num_batches_tracked", Tensor<T, B>(Shape{1}));
  }

  Var<T, B> forward(Var<T, B> x) override { return run(x, false); }
  /// In training, relu(forward(x)) as one batch_norm_relu op (what Sequential uses for a
  /// BatchNorm followed by a ReLU).
  bool fuses_relu() const override { return training_; }
  Var<T, B> forward_relu(Var<T, B> x) override { return run(x, true); }
  Shape output_shape(const Shape& in) const override {
    if (in[0] != c_)
      throw shape_error(describe() + ": input " + in.str() + ", expected " + std::to_string(c_) +
                        " features or channels first");
    return in;
  }
  std::vector<Parameter<T, B>*> parameters() override { return {&w_, &b_}; }
  std::vector<TensorName> tensor_names() const override { return {{"weight"}, {"bias"}}; }
  std::vector<Parameter<T, B>*> buffers() override { return {&mean_, &var_, &count_}; }
  std::vector<TensorName> buffer_names() const override {
    return {{"running_mean"}, {"running_var"}, {"num_batches_tracked"}};
  }
  void set_training(bool on) override { training_ = on; }
  /// A channel-blocked batch (blocks of 8 or 16) is normalised as it is in training
  /// (BnLayout::blocked), and returned to NCHW first otherwise.
  bool accepts_blocked() const override { return true; }
  std::string describe() const override { return "BatchNorm(" + std::to_string(c_) + ")"; }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}
        .set("features", double(c_))
        .set("eps", eps_)
        .set("momentum", momentum_);
  }
  /// ONNX BatchNormalization (inference form: the running statistics), whose epsilon is a
  /// float attribute; the exporter writes integer attributes only, so eps must be ONNX's
  /// default 1e-5.
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    if (eps_ != 1e-5)
      throw value_error("export: " + describe() + " with eps " + std::to_string(eps_) +
                        " (only ONNX's default 1e-5 is exported)");
    std::vector<std::string> in{x};
    for (const auto* p : {&w_, &b_, &mean_, &var_})
      in.push_back(g.constant("bn_" + p->name, {c_}, detail::to_float(p->value.to_vector())));
    return g.op("BatchNormalization", in, {}, "bn");
  }
  index_t features() const { return c_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }
  bool training() const { return training_; }
  Parameter<T, B>& weight() { return w_; }
  Parameter<T, B>& bias() { return b_; }
  Tensor<T, B>& running_mean() { return mean_.value; }
  Tensor<T, B>& running_var() { return var_.value; }

 private:
  Var<T, B> run(Var<T, B> x, bool with_relu) {
    return detail::named(*this, [&] {
      Shape s = x.shape();
      const bool blocked = s.rank() == 5 && training_ && B::is_host && (s[4] == 8 || s[4] == 16);
      if (s.rank() == 5 && !blocked) {
        x = Sequential<T, B>::plain(x);
        s = x.shape();
      }
      if (s.rank() < 2 || (blocked ? s[1] * s[4] : s[1]) != c_)
        throw shape_error("expects [N x " + std::to_string(c_) + " (x ...)], got " + s.str());
      const BnLayout layout = blocked ? BnLayout::blocked : BnLayout::channels;
      auto& t = x.tape();
      if (!training_) {
        Var<T, B> y = batch_norm_inference(x, t.param(w_), t.param(b_), t.constant(mean_.value),
                                           t.constant(var_.value), static_cast<T>(eps_));
        return with_relu ? relu(y) : y;
      }
      const BatchNormRunning<T, B> running{&mean_.value, &var_.value, static_cast<T>(momentum_)};
      Var<T, B> y =
          with_relu
              ? batch_norm_relu(x, t.param(w_), t.param(b_), static_cast<T>(eps_), running, layout)
              : batch_norm(x, t.param(w_), t.param(b_), static_cast<T>(eps_), running, layout);
      if (s[0] > 0) count_.value = count_.value + T(1);
      return y;
    });
  }

  index_t c_;
  double eps_, momentum_;
  bool training_ = true;
  Parameter<T, B> w_, b_, mean_, var_, count_;
};

}  // namespace siam::nn

// Convolutional layers (NCHW): Conv2D, MaxPool2D, Flatten, Reshape, and the LeNet of
// Caffe's mnist_siamese example as a Sequential. Each layer's settings are public so that
// model files and exporters can describe it.
#pragma once

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/conv.hpp"
#include "siam/nn/layers.hpp"

namespace siam::nn {

namespace detail {
// Output extent of a window of k moved by s over x padded by p on both sides; -1 when it
// does not fit.
inline index_t window_extent(index_t x, index_t k, index_t s, index_t p) {
  return x + 2 * p < k ? -1 : (x + 2 * p - k) / s + 1;
}
}  // namespace detail

/// y = conv2d(x, W, b, stride, padding), W [out x in x k x k], b [out] (zeros).
/// Default initialisation He: W ~ Normal(0, sqrt(2 / (in k k))); Glorot: Uniform(-a, a),
/// a = sqrt(6 / (in k k + out k k)). Throws value_error for non-positive sizes, stride < 1
/// or padding < 0; forward throws shape_error naming the layer and the shapes.
template <class T, class B>
class Conv2D final : public Layer<T, B> {
 public:
  static constexpr const char* kind = "Conv2D";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng& rng) {
    return std::make_unique<Conv2D>(s.get_int("in", 1, LayerSpec::max_size),
                                    s.get_int("out", 1, LayerSpec::max_size),
                                    s.get_int("kernel", 1, 4096), rng, s.get_int("stride", 1, 4096),
                                    s.get_int("padding", 0, 4096), s.get_int("bias", 0, 1) == 1);
  }

  Conv2D(index_t in_channels, index_t out_channels, index_t kernel, Rng& rng, index_t stride = 1,
         index_t padding = 0, bool bias = true, Init init = Init::he)
      : in_(in_channels), out_(out_channels), k_(kernel), stride_(stride), pad_(padding) {
    if (in_ <= 0 || out_ <= 0 || k_ <= 0 || stride_ <= 0 || pad_ < 0)
      throw value_error("Conv2D: channels " + std::to_string(in_) + " -> " + std::to_string(out_) +
                        ", kernel " + std::to_string(k_) + ", stride " + std::to_string(stride_) +
                        ", padding " + std::to_string(pad_) +
                        ": sizes and stride must be positive, padding not negative");
    const index_t fan_in = in_ * k_ * k_, fan_out = out_ * k_ * k_;
    std::vector<T> w(static_cast<std::size_t>(out_ * fan_in));
    if (init == Init::he) {
      const double sd = std::sqrt(2.0 / static_cast<double>(fan_in));
      for (auto& v : w)
        v = static_cast<T>(rng.normal(0.0, sd));
    } else {
      const double a = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
      for (auto& v : w)
        v = static_cast<T>(rng.uniform(-a, a));
    }
    w_ = Parameter<T, B>("W", Tensor<T, B>::from(Shape{out_, in_, k_, k_}, std::span<const T>(w)));
    if (bias) b_ = Parameter<T, B>("b", Tensor<T, B>(Shape{out_}));
  }

  /// In training, where the engine computes in channel blocks (conv_block(): oneDNN), the
  /// output is channel-blocked [N x out/K x OH x OW x K] when out is a multiple of K, and a
  /// blocked input is read as it is: a ResNet's activations stay in the engine's layout from
  /// one convolution to the next (Sequential returns them to NCHW where needed).
  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] {
      const Shape s = x.shape();
      const bool blocked = s.rank() == 5;
      if (!(s.rank() == 4 || blocked) || (blocked ? s[1] * s[4] : s[1]) != in_)
        throw shape_error("expects [N x " + std::to_string(in_) + " x H x W], got " + s.str());
      if (blocked && s[4] != conv_block<T, B>()) x = Sequential<T, B>::plain(x);
      const index_t k = training_ ? conv_block<T, B>() : 0;
      const index_t out_block = k > 0 && out_ % k == 0 ? k : 0;
      auto& t = x.tape();
      return has_bias() ? conv2d(x, t.param(w_), t.param(b_), stride_, pad_, out_block)
                        : conv2d(x, t.param(w_), stride_, pad_, out_block);
    });
  }
  bool accepts_blocked() const override { return true; }
  void set_training(bool on) override { training_ = on; }
  Shape output_shape(const Shape& in) const override {
    const index_t h = in.rank() == 3 ? detail::window_extent(in[1], k_, stride_, pad_) : -1;
    const index_t w = in.rank() == 3 ? detail::window_extent(in[2], k_, stride_, pad_) : -1;
    if (in.rank() != 3 || in[0] != in_ || h < 1 || w < 1)
      throw shape_error(describe() + ": input " + in.str() + ", expected [" + std::to_string(in_) +
                        " x H x W] with H and W + 2 padding at least " + std::to_string(k_));
    return Shape{out_, h, w};
  }
  std::vector<Parameter<T, B>*> parameters() override {
    if (has_bias()) return {&w_, &b_};
    return {&w_};
  }
  /// PyTorch's Conv2d: weight [O x C x K x K], bias [O], both in siam's layout.
  std::vector<TensorName> tensor_names() const override {
    if (has_bias()) return {{"weight"}, {"bias"}};
    return {{"weight"}};
  }
  /// Conv with strides and symmetric pads.
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    std::vector<std::string> inputs{
        x, g.constant("conv_weight", {out_, in_, k_, k_}, detail::to_float(w_.value.to_vector()))};
    if (has_bias())
      inputs.push_back(g.constant("conv_bias", {out_}, detail::to_float(b_.value.to_vector())));
    return g.op("Conv", inputs,
                {OpAttr::integers("kernel_shape", {k_, k_}),
                 OpAttr::integers("strides", {stride_, stride_}),
                 OpAttr::integers("pads", {pad_, pad_, pad_, pad_})},
                "conv");
  }
  std::string describe() const override {
    return "Conv2D(" + std::to_string(in_) + ", " + std::to_string(out_) + ", " +
           std::to_string(k_) + ", stride " + std::to_string(stride_) + ", padding " +
           std::to_string(pad_) + (has_bias() ? ")" : ", no bias)");
  }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}
        .set("in", double(in_))
        .set("out", double(out_))
        .set("kernel", double(k_))
        .set("stride", double(stride_))
        .set("padding", double(pad_))
        .set("bias", has_bias() ? 1 : 0);
  }
  index_t in_channels() const { return in_; }
  index_t out_channels() const { return out_; }
  index_t kernel() const { return k_; }
  index_t stride() const { return stride_; }
  index_t padding() const { return pad_; }
  bool has_bias() const { return b_.value.size() > 0; }
  Parameter<T, B>& weight() { return w_; }
  /// The bias (throws value_error for a layer without one).
  Parameter<T, B>& bias() {
    if (!has_bias()) throw value_error(describe() + ": has no bias");
    return b_;
  }

 private:
  index_t in_, out_, k_, stride_, pad_;
  bool training_ = true;
  Parameter<T, B> w_, b_;
};

/// Max pooling over kernel x kernel windows moved by `stride` (no padding); the gradient
/// goes to each window's first maximum.
template <class T, class B>
class MaxPool2D final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "MaxPool2D";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    return std::make_unique<MaxPool2D>(s.get_int("kernel", 1, 4096), s.get_int("stride", 1, 4096));
  }

  explicit MaxPool2D(index_t kernel, index_t stride) : k_(kernel), stride_(stride) {
    if (k_ <= 0 || stride_ <= 0)
      throw value_error("MaxPool2D: kernel " + std::to_string(k_) + " and stride " +
                        std::to_string(stride_) + " must be positive");
  }
  /// The common non-overlapping pool: stride = kernel.
  explicit MaxPool2D(index_t kernel) : MaxPool2D(kernel, kernel) {}
  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] { return max_pool2d(x, k_, stride_); });
  }
  Shape output_shape(const Shape& in) const override {
    const index_t h = in.rank() == 3 ? detail::window_extent(in[1], k_, stride_, 0) : -1;
    const index_t w = in.rank() == 3 ? detail::window_extent(in[2], k_, stride_, 0) : -1;
    if (h < 1 || w < 1)
      throw shape_error(describe() + ": input " + in.str() + ", expected [C x H x W] with H and W" +
                        " at least " + std::to_string(k_));
    return Shape{in[0], h, w};
  }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    return g.op(
        "MaxPool", {x},
        {OpAttr::integers("kernel_shape", {k_, k_}),
         OpAttr::integers("strides", {stride_, stride_}), OpAttr::integers("pads", {0, 0, 0, 0})},
        "pool");
  }
  std::string describe() const override {
    return "MaxPool2D(" + std::to_string(k_) + ", stride " + std::to_string(stride_) + ")";
  }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}.set("kernel", double(k_)).set("stride", double(stride_));
  }
  index_t kernel() const { return k_; }
  index_t stride() const { return stride_; }

 private:
  index_t k_, stride_;
};

/// [N x ...] -> [N x (product of the rest)], no copy.
template <class T, class B>
class Flatten final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "Flatten";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&) {
    return std::make_unique<Flatten>();
  }

  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] { return flatten(x); });
  }
  Shape output_shape(const Shape& in) const override { return Shape{in.size()}; }
  std::string describe() const override { return kind; }
  LayerSpec spec() const override { return {kind, {}}; }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    return g.op("Flatten", {x}, {OpAttr::integer("axis", 1)}, "flatten");
  }
};

/// [N x ...] -> [N x d1 x d2 x d3] with the same values (no copy): lets a network of images
/// take the [N x 784] rows the data sets and the trainer hand out.
template <class T, class B>
class Reshape final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "Reshape";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    return std::make_unique<Reshape>(s.get_int("d1", 1, LayerSpec::max_size),
                                     s.get_int("d2", 1, LayerSpec::max_size),
                                     s.get_int("d3", 1, LayerSpec::max_size));
  }

  Reshape(index_t d1, index_t d2, index_t d3) : d_{d1, d2, d3} {
    if (d1 <= 0 || d2 <= 0 || d3 <= 0)
      throw value_error("Reshape: dimensions must be positive, got " + std::to_string(d1) + " x " +
                        std::to_string(d2) + " x " + std::to_string(d3));
  }
  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] {
      const Shape s = x.shape();
      if (s.rank() < 2 || s.cols() != d_[0] * d_[1] * d_[2])
        throw shape_error("expects [N x ...] with " + std::to_string(d_[0] * d_[1] * d_[2]) +
                          " values per row, got " + s.str());
      return reshape(x, Shape{s.rows(), d_[0], d_[1], d_[2]});
    });
  }
  Shape output_shape(const Shape& in) const override {
    if (in.size() != d_[0] * d_[1] * d_[2])
      throw shape_error(describe() + ": input " + in.str() + " has " + std::to_string(in.size()) +
                        " values, expected " + std::to_string(d_[0] * d_[1] * d_[2]));
    return Shape{d_[0], d_[1], d_[2]};
  }
  /// Exported only where it changes nothing (the network's first layer, on inputs of its
  /// shape): the graph's input then has that shape.
  std::string emit(GraphEmitter&, const std::string& x, const Shape& in) const override {
    if (!(in == Shape{d_[0], d_[1], d_[2]}))
      throw value_error(describe() +
                        ": exported only as the network's first layer, on inputs of its shape");
    return x;
  }
  std::string describe() const override {
    return "Reshape(" + std::to_string(d_[0]) + ", " + std::to_string(d_[1]) + ", " +
           std::to_string(d_[2]) + ")";
  }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}
        .set("d1", double(d_[0]))
        .set("d2", double(d_[1]))
        .set("d3", double(d_[2]));
  }
  const index_t* dims() const { return d_; }

 private:
  index_t d_[3];
};

/// Caffe's mnist_siamese LeNet with an `embedding`-D output (2 by default), He init:
///   Reshape(1, 28, 28) - Conv2D(1->20, 5x5) - ReLU - MaxPool(2) - Conv2D(20->50, 5x5) - ReLU -
///   MaxPool(2) - Flatten - Dense(800->500) - ReLU - Dense(500->embedding).
/// Takes [N x 784] rows or [N x 1 x 28 x 28] images (the Reshape is then a no-op view).
template <class T, class B>
Sequential<T, B> lenet(Rng& rng, index_t embedding = 2, Init init = Init::he) {
  Sequential<T, B> net;
  net.template add<Reshape<T, B>>(1, 28, 28);
  net.template add<Conv2D<T, B>>(1, 20, 5, rng, 1, 0, true, init);
  net.template add<ReLU<T, B>>();
  net.template add<MaxPool2D<T, B>>(2, 2);
  net.template add<Conv2D<T, B>>(20, 50, 5, rng, 1, 0, true, init);
  net.template add<ReLU<T, B>>();
  net.template add<MaxPool2D<T, B>>(2, 2);
  net.template add<Flatten<T, B>>();
  net.template add<Dense<T, B>>(800, 500, rng, init);
  net.template add<ReLU<T, B>>();
  net.template add<Dense<T, B>>(500, embedding, rng, init);
  net.set_input_shape(Shape{1, 28, 28});
  return net;
}

}  // namespace siam::nn

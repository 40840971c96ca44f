// Average pooling layers: GlobalAvgPool ([N x C x H x W] -> [N x C], what a ResNet ends
// with) and AvgPool2D (kernel x kernel windows, no padding).
#pragma once

#include <memory>
#include <string>

#include "siam/autodiff/pool.hpp"
#include "siam/detail/conv_geometry.hpp"
#include "siam/nn/layers.hpp"

namespace siam::nn {

/// Each channel's plane to its mean: [N x C x H x W] -> [N x C]. ONNX: GlobalAveragePool,
/// then Flatten.
template <class T, class B>
class GlobalAvgPool final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "GlobalAvgPool";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&) {
    return std::make_unique<GlobalAvgPool>();
  }
  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] { return global_avg_pool2d(x); });
  }
  Shape output_shape(const Shape& in) const override {
    if (in.rank() < 2 || in.size() == 0)
      throw shape_error(describe() + ": input " + in.str() + ", expected [C x H x W]");
    return Shape{in[0]};
  }
  std::string describe() const override { return kind; }
  LayerSpec spec() const override { return {kind, {}}; }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    const std::string p = g.op("GlobalAveragePool", {x}, {}, "gap");
    return g.op("Flatten", {p}, {OpAttr::integer("axis", 1)}, "flatten");
  }
};

/// The mean of each kernel x kernel window moved by `stride` (no padding). Throws
/// value_error for a kernel or stride below 1.
template <class T, class B>
class AvgPool2D final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "AvgPool2D";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    return std::make_unique<AvgPool2D>(s.get_int("kernel", 1, 4096), s.get_int("stride", 1, 4096));
  }
  AvgPool2D(index_t kernel, index_t stride) : k_(kernel), stride_(stride) {
    if (k_ <= 0 || stride_ <= 0)
      throw value_error("AvgPool2D: kernel " + std::to_string(k_) + " and stride " +
                        std::to_string(stride_) + " must be positive");
  }
  Var<T, B> forward(Var<T, B> x) override {
    return detail::named(*this, [&] { return avg_pool2d(x, k_, stride_); });
  }
  Shape output_shape(const Shape& in) const override {
    const index_t h = in.rank() == 3 ? siam::detail::window_out(in[1], k_, stride_, 0) : -1;
    const index_t w = in.rank() == 3 ? siam::detail::window_out(in[2], k_, stride_, 0) : -1;
    if (h < 1 || w < 1)
      throw shape_error(describe() + ": input " + in.str() + ", expected [C x H x W] with H and W" +
                        " at least " + std::to_string(k_));
    return Shape{in[0], h, w};
  }
  std::string describe() const override {
    return "AvgPool2D(" + std::to_string(k_) + ", stride " + std::to_string(stride_) + ")";
  }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}.set("kernel", double(k_)).set("stride", double(stride_));
  }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    return g.op(
        "AveragePool", {x},
        {OpAttr::integers("kernel_shape", {k_, k_}),
         OpAttr::integers("strides", {stride_, stride_}), OpAttr::integers("pads", {0, 0, 0, 0})},
        "avgpool");
  }
  index_t kernel() const { return k_; }
  index_t stride() const { return stride_; }

 private:
  index_t k_, stride_;
};

}  // namespace siam::nn

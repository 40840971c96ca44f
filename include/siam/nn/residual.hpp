// Residual: a block whose output is body(x) + x, or body(x) + projection(x) when the body
// changes the shape (ResNet's 1x1 strided convolution and BatchNorm). With ReLU after it,
// ResNet's basic block is
//
//   Sequential<T, B> body;
//   body.add<Conv2D<T, B>>(in, out, 3, rng, stride, 1, false).add<BatchNorm<T, B>>(out)
//       .add<ReLU<T, B>>().add<Conv2D<T, B>>(out, out, 3, rng, 1, 1, false)
//       .add<BatchNorm<T, B>>(out);
//   Sequential<T, B> proj;  // empty when stride == 1 and in == out
//   proj.add<Conv2D<T, B>>(in, out, 1, rng, stride, 0, false).add<BatchNorm<T, B>>(out);
//   net.add(std::make_unique<Residual<T, B>>(std::move(body), std::move(proj)));
//   net.add<ReLU<T, B>>();
//
// In a model file a Residual is the line "Residual body=K projection=P" followed by the
// K body layers and the P projection layers (nn::specs writes them, nn::build reads them).
// Tensor names as a PyTorch module with `body` and `projection` nn.Sequential children:
// "body.0.weight", "projection.1.running_mean".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "siam/nn/layers.hpp"

namespace siam::nn {

template <class T, class B>
class Residual final : public Layer<T, B> {
 public:
  static constexpr const char* kind = "Residual";
  /// An empty block expecting `body` and `projection` layers (nn::build adds them).
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    auto r = std::make_unique<Residual>();
    r->pending_body_ = static_cast<std::size_t>(s.get_int("body", 1, 1 << 20));
    r->pending_projection_ = static_cast<std::size_t>(s.get_int("projection", 0, 1 << 20));
    return r;
  }

  Residual() = default;
  /// body(x) + projection(x); an empty projection is the identity.
  explicit Residual(Sequential<T, B> body, Sequential<T, B> projection = {})
      : body_(std::move(body)), proj_(std::move(projection)) {}

  /// Throws shape_error naming the block when the two paths' shapes differ.
  Var<T, B> forward(Var<T, B> x) override { return run(x, false); }
  /// relu(body(x) + shortcut) as one add_relu op (what Sequential uses for Residual
  /// followed by ReLU, as in ResNet's basic block).
  bool fuses_relu() const override { return true; }
  Var<T, B> forward_relu(Var<T, B> x) override { return run(x, true); }
  /// Both paths run on a channel-blocked batch as they do on NCHW (each Sequential converts
  /// where its layers need); the sum is blocked when either path's output is.
  bool accepts_blocked() const override { return true; }
  Shape output_shape(const Shape& in) const override {
    const Shape y = body_.output_shape(in);
    const Shape s = proj_.size() ? proj_.output_shape(in) : in;
    if (!(y == s))
      throw shape_error(describe() + ": for input " + in.str() + " the body gives " + y.str() +
                        ", the " + (proj_.size() ? "projection " : "identity ") + s.str());
    return y;
  }
  std::vector<Parameter<T, B>*> parameters() override {
    auto out = body_.parameters();
    for (auto* p : proj_.parameters())
      out.push_back(p);
    return out;
  }
  std::vector<TensorName> tensor_names() const override {
    return names(body_.tensor_names(), proj_.tensor_names());
  }
  std::vector<Parameter<T, B>*> buffers() override {
    auto out = body_.buffers();
    for (auto* p : proj_.buffers())
      out.push_back(p);
    return out;
  }
  std::vector<TensorName> buffer_names() const override {
    return names(body_.buffer_names(), proj_.buffer_names());
  }
  std::vector<std::uint64_t*> streams() override {
    auto out = body_.streams();
    for (auto* c : proj_.streams())
      out.push_back(c);
    return out;
  }
  void set_training(bool on) override {
    body_.set_training(on);
    proj_.set_training(on);
  }
  std::string describe() const override {
    return "Residual(" + body_.describe() + (proj_.size() ? " + " + proj_.describe() : "") + ")";
  }
  /// The block's own line; nn::specs follows it with its layers' lines.
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}
        .set("body", double(body_.size()))
        .set("projection", double(proj_.size()));
  }
  /// The body's ops, the projection's (if any), then Add.
  std::string emit(GraphEmitter& g, const std::string& x, const Shape& in) const override {
    const std::string y = body_.emit(g, x, in);
    const std::string s = proj_.size() ? proj_.emit(g, x, in) : x;
    return g.op("Add", {y, s}, {}, "residual");
  }
  Sequential<T, B>& body() { return body_; }
  Sequential<T, B>& projection() { return proj_; }
  const Sequential<T, B>& body() const { return body_; }
  const Sequential<T, B>& projection() const { return proj_; }
  /// Layers a spec announced that nn::build has not added yet.
  std::size_t pending_body() const { return pending_body_ - std::min(pending_body_, body_.size()); }
  std::size_t pending_projection() const {
    return pending_projection_ - std::min(pending_projection_, proj_.size());
  }
  std::vector<Sequential<T, B>*> children() override { return {&body_, &proj_}; }
  std::vector<const Sequential<T, B>*> children() const override { return {&body_, &proj_}; }
  std::vector<std::size_t> pending_children() const override {
    return {pending_body(), pending_projection()};
  }

 private:
  Var<T, B> run(Var<T, B> x, bool relu_after) {
    Var<T, B> y = body_.forward_blocked(x);
    Var<T, B> s = proj_.size() ? proj_.forward_blocked(x) : x;
    if constexpr (B::is_host)
      if (y.shape().rank() != s.shape().rank()) {  // one path blocked: both blocked
        if (y.shape().rank() == 5 && s.shape().rank() == 4 && s.shape()[1] % y.shape()[4] == 0)
          s = to_blocked(s, y.shape()[4]);
        else if (s.shape().rank() == 5 && y.shape().rank() == 4 && y.shape()[1] % s.shape()[4] == 0)
          y = to_blocked(y, s.shape()[4]);
        else {
          y = Sequential<T, B>::plain(y);
          s = Sequential<T, B>::plain(s);
        }
      }
    if (!(y.shape() == s.shape()))
      throw shape_error(describe() + ": the body gives " + y.shape().str() + ", the " +
                        (proj_.size() ? "projection " : "identity ") + s.shape().str() +
                        " (add a projection that matches the body's shape)");
    return relu_after ? add_relu(y, s) : y + s;
  }
  // Sequential names its tensors "layers.<i>.<name>"; a child Sequential here is
  // "body.<i>.<name>" / "projection.<i>.<name>" (PyTorch's names for nn.Sequential children).
  static std::vector<TensorName> names(const std::vector<TensorName>& body,
                                       const std::vector<TensorName>& proj) {
    std::vector<TensorName> out;
    const std::string layers = "layers.";
    for (const auto& [list, prefix] : {std::pair{&body, "body."}, std::pair{&proj, "projection."}})
      for (const auto& t : *list)
        out.push_back({prefix + t.name.substr(t.name.rfind(layers, 0) == 0 ? layers.size() : 0),
                       t.transposed});
    return out;
  }

  Sequential<T, B> body_, proj_;
  std::size_t pending_body_ = 0, pending_projection_ = 0;
};

}  // namespace siam::nn

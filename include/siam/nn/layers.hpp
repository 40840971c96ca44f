// Layers composed at run time. A network is a Sequential holding concrete layers
// behind one small virtual interface: no network is ever encoded in nested template
// types, so models build fast and error messages stay short.
//
// A layer kind is registered once, in its own class (see nn/registry.hpp for the list):
//   static constexpr const char* kind = "Dense";           the spec's kind name
//   static std::unique_ptr<Layer<T, B>> from_spec(spec, rng)   the builder
// and overrides every pure function of Layer:
//   forward(x)             the op, on a batch [N x <per-example shape>]
//   output_shape(in)       per-example output shape for a per-example input shape;
//                          throws shape_error naming the layer and both shapes
//   spec()                 kind and settings (what a model file stores)
//   describe()             a short human description, "Dense(784, 64)"
//   emit(g, x, in)         the forward pass as ops of an exported graph (nn/emitter.hpp)
//   parameters()           the trainable tensors, in a fixed order
//   tensor_names()         one TensorName per parameter: PyTorch's name and layout
// A layer without parameters derives from ParameterFree, which supplies the last two.
// A container (Residual) also returns its Sequentials from children() and, while nn::build
// fills them from a spec list, their announced sizes from pending_children().
// A missing piece does not compile: the functions are pure, and the registry checks the
// two static members (LayerKind in nn/registry.hpp).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/elementwise.hpp"
#include "siam/autodiff/layout.hpp"
#include "siam/autodiff/metric.hpp"
#include "siam/autodiff/ops.hpp"
#include "siam/autodiff/reduce.hpp"
#include "siam/autodiff/structure.hpp"
#include "siam/nn/emitter.hpp"
#include "siam/nn/init.hpp"
#include "siam/nn/spec.hpp"

namespace siam::nn {

template <class T, class B>
class Sequential;

template <class T, class B>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual Var<T, B> forward(Var<T, B> x) = 0;
  /// Whether forward_relu fuses a following ReLU into this layer's op (Dense: linear_relu;
  /// BatchNorm in training: batch_norm_relu; Residual: add_relu); Sequential then runs the
  /// pair as one.
  virtual bool fuses_relu() const { return false; }
  /// relu(forward(x)), as one op where fuses_relu() says so.
  virtual Var<T, B> forward_relu(Var<T, B> x) { return relu(forward(x)); }
  /// Whether forward takes a channel-blocked batch [N x C/K x H x W x K]
  /// (autodiff/layout.hpp) as the NCHW batch it stands for; Sequential converts a blocked
  /// batch to NCHW before a layer that does not. Conv2D writes blocked batches in training
  /// where the convolution engine computes in them (conv_block()).
  virtual bool accepts_blocked() const { return false; }
  /// The shape of one output example for one input example of shape `in` (no batch
  /// axis: [784], [1 x 28 x 28]). Throws shape_error naming the layer and both shapes.
  virtual Shape output_shape(const Shape& in) const = 0;
  virtual std::vector<Parameter<T, B>*> parameters() = 0;
  /// One entry per parameters() entry, in the same order (see TensorName).
  virtual std::vector<TensorName> tensor_names() const = 0;
  virtual std::string describe() const = 0;
  /// Kind and settings, for self-describing model files (see nn/registry.hpp). A layer
  /// that cannot be rebuilt from settings alone throws value_error.
  virtual LayerSpec spec() const = 0;
  /// Appends the layer's forward pass to an exported graph: `x` names its input, whose
  /// per-example shape is `in` (already checked with output_shape); returns the name of
  /// its output. Throws value_error if the layer has no exported form.
  virtual std::string emit(GraphEmitter& g, const std::string& x, const Shape& in) const = 0;
  /// State that is saved with the parameters but never trained (BatchNorm's running
  /// statistics), in a fixed order; none by default.
  virtual std::vector<Parameter<T, B>*> buffers() { return {}; }
  /// One TensorName per buffers() entry (PyTorch's buffer names).
  virtual std::vector<TensorName> buffer_names() const { return {}; }
  /// Where the layer's random stream stands, as words a resumed run must continue from
  /// (Dropout's seed and step, which pick its masks), in a fixed order; none by default.
  /// Checkpoints store them.
  virtual std::vector<std::uint64_t*> streams() { return {}; }
  /// Training mode (batch statistics, dropout active) or inference mode (running
  /// statistics, dropout off); containers pass it on. Layers without a mode ignore it.
  virtual void set_training(bool) {}
  /// The Sequentials a container layer holds (Residual: body, projection), whose layers
  /// follow its own line in a spec list, in this order; none by default.
  virtual std::vector<Sequential<T, B>*> children() { return {}; }
  virtual std::vector<const Sequential<T, B>*> children() const { return {}; }
  /// While nn::build fills a container from a spec list: how many layers each child still
  /// expects (what its spec announced); one entry per children() entry.
  virtual std::vector<std::size_t> pending_children() const { return {}; }

 protected:
  Layer() = default;
  Layer(const Layer&) = default;
  Layer& operator=(const Layer&) = default;
};

/// Base of the layers that hold no parameters.
template <class T, class B>
class ParameterFree : public Layer<T, B> {
 public:
  std::vector<Parameter<T, B>*> parameters() override { return {}; }
  std::vector<TensorName> tensor_names() const override { return {}; }
};

namespace detail {
// Rethrows a shape_error of an op with the layer's description in front (built only then:
// a forward pass allocates nothing).
template <class L, class F>
auto named(const L& layer, const F& f) {
  try {
    return f();
  } catch (const shape_error& e) {
    throw shape_error(layer.describe() + ": " + e.what());
  }
}
// A per-example shape from its dimensions (rank 1 to 3).
inline Shape shape_of(const std::vector<index_t>& d) {
  switch (d.size()) {
    case 1:
      return Shape{d[0]};
    case 2:
      return Shape{d[0], d[1]};
    case 3:
      return Shape{d[0], d[1], d[2]};
    default:
      throw shape_error("a per-example shape has rank 1 to 3, got " + std::to_string(d.size()));
  }
}
template <class T>
std::vector<float> to_float(const std::vector<T>& v) {
  return std::vector<float>(v.begin(), v.end());
}
}  // namespace detail

/// y = x W + b with W [in x out], b [out]. Default initialisation: He (b = 0). Any input
/// whose examples hold `in` values is taken ([N x in], or [N x C x H x W] with C H W = in).
template <class T, class B>
class Dense final : public Layer<T, B> {
 public:
  static constexpr const char* kind = "Dense";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng& rng) {
    return std::make_unique<Dense>(s.get_int("in", 1, LayerSpec::max_size),
                                   s.get_int("out", 1, LayerSpec::max_size), rng);
  }

  Dense(index_t in, index_t out, Rng& rng, Init init = Init::he)
      : w_("W", init_weights<T, B>(in, out, init, rng)), b_("b", Tensor<T, B>(Shape{out})) {}

  Var<T, B> forward(Var<T, B> x) override {
    check(x.shape());
    return linear(x, x.tape().param(w_), x.tape().param(b_));
  }
  /// relu(x W + b) as one fused op (what Sequential uses for Dense followed by ReLU).
  bool fuses_relu() const override { return true; }
  Var<T, B> forward_relu(Var<T, B> x) override {
    check(x.shape());
    return linear_relu(x, x.tape().param(w_), x.tape().param(b_));
  }
  Shape output_shape(const Shape& in) const override {
    if (in.size() != in_features())
      throw shape_error(describe() + ": input " + in.str() + " has " + std::to_string(in.size()) +
                        " features, expected " + std::to_string(in_features()));
    return Shape{out_features()};
  }
  std::vector<Parameter<T, B>*> parameters() override { return {&w_, &b_}; }
  std::vector<TensorName> tensor_names() const override { return {{"weight", true}, {"bias"}}; }
  std::string describe() const override {
    return "Dense(" + std::to_string(in_features()) + ", " + std::to_string(out_features()) + ")";
  }
  LayerSpec spec() const override {
    return LayerSpec{kind, {}}.set("in", double(in_features())).set("out", double(out_features()));
  }
  /// Gemm(x, W^T, b, transB = 1), W stored [out x in] as PyTorch's Linear (the layout
  /// OpenCV's Gemm import needs); a multi-dimensional input is flattened first.
  std::string emit(GraphEmitter& g, const std::string& x, const Shape& in) const override {
    const std::string flat =
        in.rank() > 1 ? g.op("Flatten", {x}, {OpAttr::integer("axis", 1)}, "flatten") : x;
    const index_t n_in = in_features(), n_out = out_features();
    const auto w = w_.value.to_vector();
    std::vector<float> wt(w.size());
    for (index_t r = 0; r < n_in; ++r)
      for (index_t c = 0; c < n_out; ++c)
        wt[static_cast<std::size_t>(c * n_in + r)] =
            static_cast<float>(w[static_cast<std::size_t>(r * n_out + c)]);
    const std::string wn = g.constant("weight", {n_out, n_in}, wt);
    const std::string bn = g.constant("bias", {n_out}, detail::to_float(b_.value.to_vector()));
    return g.op("Gemm", {flat, wn, bn}, {OpAttr::integer("transB", 1)}, "dense");
  }
  index_t in_features() const { return w_.value.shape()[0]; }
  index_t out_features() const { return w_.value.shape()[1]; }
  Parameter<T, B>& weight() { return w_; }
  Parameter<T, B>& bias() { return b_; }

 private:
  void check(const Shape& s) const {
    if (s.cols() != in_features())
      throw shape_error(describe() + ": input " + s.str() + " has " + std::to_string(s.cols()) +
                        " features per example, expected " + std::to_string(in_features()));
  }
  Parameter<T, B> w_, b_;
};

namespace detail {
// An elementwise activation: the same shape out, one ONNX op.
template <class T, class B>
class Activation : public ParameterFree<T, B> {
 public:
  Shape output_shape(const Shape& in) const override { return in; }
  std::string describe() const override { return name(); }
  LayerSpec spec() const override { return {name(), {}}; }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape&) const override {
    std::string stem = onnx_op();
    for (auto& c : stem)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return g.op(onnx_op(), {x}, {}, stem);
  }

 private:
  virtual std::string name() const = 0;
  virtual std::string onnx_op() const = 0;
};
}  // namespace detail

template <class T, class B>
class ReLU final : public detail::Activation<T, B> {
 public:
  static constexpr const char* kind = "ReLU";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&) {
    return std::make_unique<ReLU>();
  }
  Var<T, B> forward(Var<T, B> x) override { return relu(x); }
  bool accepts_blocked() const override { return true; }  // elementwise

 private:
  std::string name() const override { return kind; }
  std::string onnx_op() const override { return "Relu"; }
};

template <class T, class B>
class Tanh final : public detail::Activation<T, B> {
 public:
  static constexpr const char* kind = "Tanh";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&) {
    return std::make_unique<Tanh>();
  }
  Var<T, B> forward(Var<T, B> x) override { return tanh(x); }

 private:
  std::string name() const override { return kind; }
  std::string onnx_op() const override { return "Tanh"; }
};

template <class T, class B>
class Sigmoid final : public detail::Activation<T, B> {
 public:
  static constexpr const char* kind = "Sigmoid";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec&, Rng&) {
    return std::make_unique<Sigmoid>();
  }
  Var<T, B> forward(Var<T, B> x) override { return sigmoid(x); }

 private:
  std::string name() const override { return kind; }
  std::string onnx_op() const override { return "Sigmoid"; }
};

/// Each row scaled to unit L2 norm, x / max(|x|, eps): embeddings on the sphere (what
/// cosine-based losses and retrieval by cosine expect).
///
/// Exported as ReduceL2(axis 1) followed by Div: x / |x|. That is the form OpenCV's DNN
/// importer (4.6) fuses into its Normalize layer; any other form (an epsilon added, Clip,
/// Max, LpNormalization) fails to import there after a Flatten or a Gemm. It differs from
/// siam only for rows with |x| < eps (a zero row: ONNX gives 0/0, siam 0; OpenCV adds its
/// own epsilon).
template <class T, class B>
class L2Normalize final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "L2Normalize";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng&) {
    return std::make_unique<L2Normalize>(s.get("eps"));
  }

  explicit L2Normalize(double eps = 1e-12) : eps_(eps) {
    if (!(eps > 0)) throw value_error("L2Normalize: eps must be > 0, got " + std::to_string(eps));
  }
  Var<T, B> forward(Var<T, B> x) override { return l2_normalize_rows(x, static_cast<T>(eps_)); }
  Shape output_shape(const Shape& in) const override { return in; }
  std::string describe() const override { return kind; }
  LayerSpec spec() const override { return LayerSpec{kind, {}}.set("eps", eps_); }
  std::string emit(GraphEmitter& g, const std::string& x, const Shape& in) const override {
    if (in.rank() != 1)
      throw value_error(describe() + ": examples " + in.str() +
                        " have no exported form; put a Flatten in front of it");
    const std::string norm = g.op(
        "ReduceL2", {x}, {OpAttr::integers("axes", {1}), OpAttr::integer("keepdims", 1)}, "norm");
    return g.op("Div", {x, norm}, {}, "normalized");
  }
  double eps() const { return eps_; }

 private:
  double eps_;
};

/// Layers applied in order. A layer that fuses_relu() directly followed by a ReLU runs the
/// pair as one op (Dense: linear_relu; BatchNorm in training: batch_norm_relu; Residual:
/// add_relu; same result, fewer passes over the data). A channel-blocked batch goes back to
/// NCHW (from_blocked) before a layer that does not accept_blocked(), and at the end of
/// forward(); forward_blocked() may return it blocked (what a Residual's paths use).
template <class T, class B>
class Sequential final : public Layer<T, B> {
 public:
  Sequential() = default;

  template <class L, class... Args>
  Sequential& add(Args&&... args) {
    layers_.push_back(std::make_unique<L>(std::forward<Args>(args)...));
    layers_.back()->set_training(training_);
    return *this;
  }
  Sequential& add(std::unique_ptr<Layer<T, B>> layer) {
    layers_.push_back(std::move(layer));
    layers_.back()->set_training(training_);
    return *this;
  }

  /// Shape errors name the layer: "layers.3 Dense(800, 16): input ... expected 800".
  Var<T, B> forward(Var<T, B> x) override { return plain(forward_blocked(x)); }
  /// forward(), whose result may be channel-blocked (rank 5) where the last layers keep it so.
  Var<T, B> forward_blocked(Var<T, B> x) {
    std::size_t i = 0;
    try {
      for (; i < layers_.size(); ++i) {
        if (!layers_[i]->accepts_blocked()) x = plain(x);
        if (layers_[i]->fuses_relu() && i + 1 < layers_.size() &&
            dynamic_cast<ReLU<T, B>*>(layers_[i + 1].get())) {
          x = layers_[i]->forward_relu(x);
          ++i;
        } else {
          x = layers_[i]->forward(x);
        }
      }
    } catch (const shape_error& e) {
      throw shape_error(where(i, e.what()));
    }
    return x;
  }
  bool accepts_blocked() const override { return true; }  // each layer is asked in turn
  /// x in NCHW: from_blocked for a channel-blocked batch (rank 5), else x itself.
  static Var<T, B> plain(Var<T, B> x) {
    if constexpr (B::is_host)
      if (x.shape().rank() == 5) return from_blocked(x);
    return x;
  }
  /// The per-example output shape; throws shape_error naming the first layer that does
  /// not fit ("layers.<i> <layer>: ...") with its input shape.
  Shape output_shape(const Shape& in) const override {
    Shape s = in;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      s = output_shape_of(i, s);
    return s;
  }
  std::vector<Parameter<T, B>*> parameters() override {
    std::vector<Parameter<T, B>*> ps;
    for (auto& l : layers_)
      for (auto* p : l->parameters())
        ps.push_back(p);
    return ps;
  }
  /// "layers.<i>.<name>" for every parameter (indices count every layer, parameter-free
  /// ones too, as torch.nn.Sequential does), in parameters() order.
  std::vector<TensorName> tensor_names() const override {
    std::vector<TensorName> out;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      for (auto& t : layers_[i]->tensor_names())
        out.push_back({"layers." + std::to_string(i) + "." + t.name, t.transposed});
    return out;
  }
  /// Every layer's ops in order (shapes from output_shape).
  std::string emit(GraphEmitter& g, const std::string& x, const Shape& in) const override {
    std::string v = x;
    Shape s = in;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Shape next = output_shape_of(i, s);
      try {
        v = layers_[i]->emit(g, v, s);
      } catch (const value_error& e) {
        throw value_error(where(i, e.what()));
      }
      s = next;
    }
    return v;
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
  std::vector<Parameter<T, B>*> buffers() override {
    std::vector<Parameter<T, B>*> out;
    for (auto& l : layers_)
      for (auto* b : l->buffers())
        out.push_back(b);
    return out;
  }
  std::vector<TensorName> buffer_names() const override {
    std::vector<TensorName> out;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      for (auto& t : layers_[i]->buffer_names())
        out.push_back({"layers." + std::to_string(i) + "." + t.name, t.transposed});
    return out;
  }
  std::vector<std::uint64_t*> streams() override {
    std::vector<std::uint64_t*> out;
    for (auto& l : layers_)
      for (auto* c : l->streams())
        out.push_back(c);
    return out;
  }
  void set_training(bool on) override {
    training_ = on;
    for (auto& l : layers_)
      l->set_training(on);
  }
  /// Training mode (the default, as in PyTorch): BatchNorm normalises with the batch's
  /// statistics and updates its running ones, Dropout drops. eval(): running statistics,
  /// no dropout. embed() always runs in inference mode and restores the mode after.
  Sequential& train() {
    set_training(true);
    return *this;
  }
  Sequential& eval() {
    set_training(false);
    return *this;
  }
  bool training() const { return training_; }
  /// What model files and checkpoints store: parameters(), then buffers().
  std::vector<Parameter<T, B>*> state() {
    auto out = parameters();
    for (auto* b : buffers())
      out.push_back(b);
    return out;
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
    struct Inference {  // inference mode for this call, the previous mode restored after
      Sequential& net;
      bool was;
      ~Inference() { net.set_training(was); }
    } mode{*this, training_};
    if (training_) set_training(false);
    const Shape s = x.shape();
    if (s.rank() >= 1) infer_rows_ = std::max(infer_rows_, s[0]);
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
  /// Bytes held by embed()'s buffers: every intermediate value of the largest batch seen.
  std::size_t embed_bytes() const { return infer_ ? infer_->bytes() : 0; }
  /// The largest batch embed() has run since its buffers were made (0: none yet).
  index_t embed_rows() const { return infer_ ? infer_rows_ : 0; }
  /// Gives embed()'s buffers back (the next embed() allocates them again); the view the last
  /// embed() returned is invalid from here on.
  void release_embed_buffers() {
    infer_.reset();
    infer_rows_ = 0;
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
  std::string where(std::size_t i, const std::string& what) const {
    const std::string d = i < layers_.size() ? layers_[i]->describe() : std::string("?");
    const std::string head = "layers." + std::to_string(i) + " ";
    return what.rfind(d, 0) == 0 ? head + what : head + d + ": " + what;
  }
  Shape output_shape_of(std::size_t i, const Shape& in) const {
    try {
      return layers_[i]->output_shape(in);
    } catch (const shape_error& e) {
      throw shape_error(where(i, e.what()));
    }
  }

  std::vector<std::unique_ptr<Layer<T, B>>> layers_;
  Shape input_shape_;
  std::unique_ptr<Tape<T, B>> infer_;
  index_t infer_rows_ = 0;
  bool training_ = true;
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

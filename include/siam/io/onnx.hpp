// ONNX export of a network, through the ONNX project's own protobuf schema (onnx/onnx_pb.h
// from libonnx-dev; CMake target siam::onnx, option SIAM_ONNX). Optional: the core library
// and siam/siamese.hpp never include this header.
//
// The model: opset 13 (or later, see OnnxOptions), one input "images" of shape
// [batch, <sample shape>] with a dynamic batch dimension, one output "embedding"
// [batch, <embedding size>], FP32 initializers (a double network is rounded to float),
// the producer's name and version, and the architecture (net.describe()) in the metadata.
//
// Each layer writes its own ops (Layer::emit, through the neutral nn::GraphEmitter of
// nn/emitter.hpp, which OnnxGraph implements here); shapes come from Layer::output_shape.
// The layers keep to the subset of ONNX that OpenCV's DNN importer (4.6) and ONNX Runtime
// both accept:
//   Dense           Gemm(x, W^T, b, transB = 1): W stored [out x in] as PyTorch's Linear
//   ReLU/Tanh/...   Relu, Tanh, Sigmoid
//   Conv (NCHW)     Conv, weight [O x C x KH x KW], bias [O], strides and symmetric pads
//   max pooling     MaxPool, kernel, strides and symmetric pads
//   flatten         Flatten(axis = 1)
//   L2 normalise    ReduceL2(axis 1) + Div: x / |x| (the form OpenCV fuses into its
//                   Normalize layer; see nn::L2Normalize)
// onnx_emit below keeps the same ops as free functions for graphs built by hand.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/file.hpp"
#include "siam/nn/emitter.hpp"
#include "siam/nn/layers.hpp"
#include "siam/version.hpp"

namespace siam::io {

struct OnnxOptions {
  /// One sample's shape, e.g. {784} or {1, 28, 28}. Empty: taken from the first layer (a
  /// Dense layer's input size). A multi-dimensional shape in front of a Dense layer is
  /// flattened first, so an MLP can take NCHW images.
  std::vector<std::int64_t> input_shape;
  std::int64_t opset = 13;  // 13..17 (what libonnx 1.12 knows)
  std::string producer_name = "siam";
  std::string producer_version = siam::version_string;
  std::string graph_name = "siam_embedding";
  std::map<std::string, std::string> metadata;  // added to "architecture" and "input_shape"
};

/// Appends nodes and FP32 initializers to a GraphProto; value names are made unique.
/// It is the ONNX implementation of the layers' nn::GraphEmitter.
class OnnxGraph final : public nn::GraphEmitter {
 public:
  explicit OnnxGraph(onnx::GraphProto& g) : g_(g) {}

  std::string constant(const std::string& stem, const std::vector<std::int64_t>& dims,
                       const std::vector<float>& values) override {
    return initializer(stem, dims, values);
  }
  std::string op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::vector<nn::OpAttr>& attrs, const std::string& stem) override {
    auto& n = node(type, inputs, stem);
    for (const auto& a : attrs) {
      if (a.scalar)
        attr(n, a.name, a.ints.at(0));
      else
        attr(n, a.name, a.ints);
    }
    return n.output(0);
  }

  /// A fresh value name "<stem>" or "<stem>_<k>".
  std::string fresh(const std::string& stem) {
    const int k = counts_[stem]++;
    return k == 0 ? stem : stem + "_" + std::to_string(k);
  }
  /// An FP32 initializer; returns its name.
  std::string initializer(const std::string& stem, const std::vector<std::int64_t>& dims,
                          const std::vector<float>& values) {
    std::int64_t n = 1;
    for (auto d : dims)
      n *= d;
    if (n != static_cast<std::int64_t>(values.size()))
      throw shape_error("OnnxGraph::initializer '" + stem + "': " + std::to_string(values.size()) +
                        " values for " + std::to_string(n) + " elements");
    auto* t = g_.add_initializer();
    t->set_name(fresh(stem));
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims)
      t->add_dims(d);
    t->mutable_float_data()->Add(values.begin(), values.end());
    return t->name();
  }
  /// A node op(inputs) -> one fresh output named after `stem`; returns the node.
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& stem) {
    auto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(fresh(op));
    for (const auto& i : inputs)
      n->add_input(i);
    n->add_output(fresh(stem));
    return *n;
  }
  static void attr(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name,
                   const std::vector<std::int64_t>& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v)
      a->add_ints(x);
  }

 private:
  onnx::GraphProto& g_;
  std::map<std::string, int> counts_;
};

/// Declares an FP32 graph input or output [batch, dims...] with a dynamic batch dimension.
inline void onnx_value_info(onnx::ValueInfoProto& v, const std::string& name,
                            const std::vector<std::int64_t>& dims) {
  v.set_name(name);
  auto* t = v.mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* s = t->mutable_shape();
  s->add_dim()->set_dim_param("batch");
  for (auto d : dims)
    s->add_dim()->set_dim_value(d);
}

/// The per-kind emitters. Each takes the name of its input value and returns its output's.
namespace onnx_emit {

/// y = x W + b with W given row-major [in x out] (siam's Dense layout); b may be empty.
inline std::string dense(OnnxGraph& g, const std::string& x, const std::vector<float>& w,
                         std::int64_t in, std::int64_t out, const std::vector<float>& b) {
  std::vector<float> wt(w.size());  // [out x in]: the layout OpenCV's Gemm import needs
  for (std::int64_t r = 0; r < in; ++r)
    for (std::int64_t c = 0; c < out; ++c)
      wt[static_cast<std::size_t>(c * in + r)] = w.at(static_cast<std::size_t>(r * out + c));
  std::vector<std::string> inputs{x, g.initializer("weight", {out, in}, wt)};
  if (!b.empty()) inputs.push_back(g.initializer("bias", {out}, b));
  auto& n = g.node("Gemm", inputs, "dense");
  OnnxGraph::attr(n, "transB", std::int64_t{1});
  return n.output(0);
}

/// op is "Relu", "Tanh" or "Sigmoid" (any elementwise unary ONNX op without attributes).
inline std::string activation(OnnxGraph& g, const std::string& x, const std::string& op) {
  std::string stem = op;
  for (auto& c : stem)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return g.node(op, {x}, stem).output(0);
}

/// 2-D convolution of NCHW input; w is [O x C x KH x KW] row-major, b [O] or empty.
inline std::string conv2d(OnnxGraph& g, const std::string& x, const std::vector<float>& w,
                          std::int64_t out_ch, std::int64_t in_ch, std::int64_t kh, std::int64_t kw,
                          const std::vector<float>& b, std::int64_t stride = 1,
                          std::int64_t pad = 0) {
  std::vector<std::string> inputs{x, g.initializer("conv_weight", {out_ch, in_ch, kh, kw}, w)};
  if (!b.empty()) inputs.push_back(g.initializer("conv_bias", {out_ch}, b));
  auto& n = g.node("Conv", inputs, "conv");
  OnnxGraph::attr(n, "kernel_shape", std::vector<std::int64_t>{kh, kw});
  OnnxGraph::attr(n, "strides", std::vector<std::int64_t>{stride, stride});
  OnnxGraph::attr(n, "pads", std::vector<std::int64_t>{pad, pad, pad, pad});
  return n.output(0);
}

/// Max pooling of NCHW input over kernel x kernel windows.
inline std::string max_pool2d(OnnxGraph& g, const std::string& x, std::int64_t kernel,
                              std::int64_t stride, std::int64_t pad = 0) {
  auto& n = g.node("MaxPool", {x}, "pool");
  OnnxGraph::attr(n, "kernel_shape", std::vector<std::int64_t>{kernel, kernel});
  OnnxGraph::attr(n, "strides", std::vector<std::int64_t>{stride, stride});
  OnnxGraph::attr(n, "pads", std::vector<std::int64_t>{pad, pad, pad, pad});
  return n.output(0);
}

/// [N, d1, d2, ...] -> [N, d1 * d2 * ...].
inline std::string flatten(OnnxGraph& g, const std::string& x) {
  auto& n = g.node("Flatten", {x}, "flatten");
  OnnxGraph::attr(n, "axis", std::int64_t{1});
  return n.output(0);
}

/// Each row of [N, D] divided by its L2 norm: x / sqrt(sum(x^2) + eps).
inline std::string l2_normalize(OnnxGraph& g, const std::string& x, float eps) {
  std::string norm;
  if (eps == 0.0f) {
    auto& n = g.node("ReduceL2", {x}, "norm");
    OnnxGraph::attr(n, "axes", std::vector<std::int64_t>{1});
    OnnxGraph::attr(n, "keepdims", std::int64_t{1});
    norm = n.output(0);
  } else {
    auto& sq = g.node("ReduceSumSquare", {x}, "sum_sq");
    OnnxGraph::attr(sq, "axes", std::vector<std::int64_t>{1});
    OnnxGraph::attr(sq, "keepdims", std::int64_t{1});
    const std::string e = g.initializer("eps", {1}, {eps});
    const std::string s = g.node("Add", {sq.output(0), e}, "sum_sq_eps").output(0);
    norm = g.node("Sqrt", {s}, "norm").output(0);
  }
  return g.node("Div", {x, norm}, "normalized").output(0);
}

}  // namespace onnx_emit

/// The network as an ONNX ModelProto (see the file comment). Throws value_error for an
/// empty network, a layer kind without an emitter or a bad option, shape_error when
/// options.input_shape does not fit the first layer.
template <class T, class B>
onnx::ModelProto to_onnx(nn::Sequential<T, B>& net, const OnnxOptions& options = {}) {
  if (net.size() == 0) throw value_error("export_onnx: the network has no layers");
  if (options.opset < 13 || options.opset > 17)
    throw value_error("export_onnx: opset " + std::to_string(options.opset) +
                      " is outside the supported 13..17");
  std::vector<std::int64_t> shape = options.input_shape;
  if (shape.empty() && net.input_shape().size() > 0)
    for (int i = 0; i < net.input_shape().rank(); ++i)
      shape.push_back(net.input_shape()[i]);
  if (shape.empty()) {
    auto* first = dynamic_cast<nn::Dense<T, B>*>(&net[0]);
    if (!first)
      throw value_error("export_onnx: cannot infer the input shape of " + net.describe() +
                        "; set OnnxOptions::input_shape");
    shape = {first->weight().value.shape()[0]};
  }
  for (auto s : shape)
    if (s <= 0) throw value_error("export_onnx: input_shape has a non-positive dimension");
  const std::vector<std::int64_t> input_shape = shape;

  onnx::ModelProto model;
  model.set_ir_version(7);  // the IR of opset 13; newer runtimes read it, older ones too
  model.set_producer_name(options.producer_name);
  model.set_producer_version(options.producer_version);
  model.set_doc_string("siam embedding network " + net.describe());
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(options.opset);
  auto add_meta = [&](const std::string& k, const std::string& v) {
    auto* p = model.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  };
  std::string shape_text;
  for (const auto d : input_shape) {
    if (!shape_text.empty()) shape_text += 'x';
    shape_text += std::to_string(d);
  }
  add_meta("architecture", net.describe());
  add_meta("input_shape", shape_text);
  for (const auto& [k, v] : options.metadata)
    if (k != "architecture" && k != "input_shape") add_meta(k, v);

  auto* graph = model.mutable_graph();
  graph->set_name(options.graph_name);
  const Shape in = nn::detail::shape_of(input_shape);
  Shape out;
  try {
    out = net.output_shape(in);  // throws naming the first layer that does not fit
  } catch (const shape_error& e) {
    throw shape_error(std::string("export_onnx: ") + e.what());
  }
  shape.clear();
  for (int i = 0; i < out.rank(); ++i)
    shape.push_back(out[i]);
  OnnxGraph g(*graph);
  std::string x = g.fresh("images");
  try {
    x = net.emit(g, x, in);
  } catch (const value_error& e) {
    throw value_error(std::string("export_onnx: ") + e.what());
  }
  // Name the last value "embedding" (an Identity would cost a node in every runtime).
  for (auto& n : *graph->mutable_node())
    for (auto& o : *n.mutable_output())
      if (o == x) o = "embedding";

  onnx_value_info(*graph->add_input(), "images", input_shape);
  onnx_value_info(*graph->add_output(), "embedding", shape);
  return model;
}

/// Writes the network as an ONNX file (atomically). Throws as to_onnx, and io_error naming
/// the file when it cannot be written.
template <class T, class B>
void export_onnx(nn::Sequential<T, B>& net, const std::filesystem::path& path,
                 const OnnxOptions& options = {}) {
  const onnx::ModelProto model = to_onnx(net, options);
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    throw io_error(path.string() + ": the ONNX model could not be serialised");
  write_file_atomic(path,
                    std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

}  // namespace siam::io

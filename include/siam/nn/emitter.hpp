// What a layer says about itself to an exporter, in neutral terms: the ops of a graph
// (ONNX operator names and attributes) and FP32 constants. A layer's emit() writes its
// forward pass through this interface; io/onnx.hpp implements it with ONNX's protobuf
// schema, so the core headers never see protobuf. Names and layouts of parameters in
// PyTorch's convention (TensorName) live here too: they are the other half of a layer's
// "how it looks outside siam".
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace siam::nn {

/// One attribute of an op: an integer (`scalar`) or a list of integers.
struct OpAttr {
  std::string name;
  std::vector<std::int64_t> ints;
  bool scalar = false;

  static OpAttr integer(std::string n, std::int64_t v) { return {std::move(n), {v}, true}; }
  static OpAttr integers(std::string n, std::vector<std::int64_t> v) {
    return {std::move(n), std::move(v), false};
  }
};

/// The sink a layer emits its forward pass into. Value names are strings; each call
/// returns the name of the value it made (unique: made from `stem`).
class GraphEmitter {
 public:
  virtual ~GraphEmitter() = default;
  /// An FP32 constant of shape `dims` (row-major values).
  virtual std::string constant(const std::string& stem, const std::vector<std::int64_t>& dims,
                               const std::vector<float>& values) = 0;
  /// A node `type`(inputs) with attributes and one output (ONNX operator names: "Gemm",
  /// "Conv", "Relu", ...; the standard domain).
  virtual std::string op(const std::string& type, const std::vector<std::string>& inputs,
                         const std::vector<OpAttr>& attrs, const std::string& stem) = 0;

 protected:
  GraphEmitter() = default;
  GraphEmitter(const GraphEmitter&) = default;
  GraphEmitter& operator=(const GraphEmitter&) = default;
};

/// How one parameter is named and laid out in PyTorch's state_dict (safetensors files):
/// its name inside the layer's module ("weight", "bias"), and whether a 2-D parameter
/// [r x c] is stored transposed [c x r] (siam's Dense W [in x out] is Linear's [out x in]).
struct TensorName {
  std::string name;
  bool transposed = false;
};

}  // namespace siam::nn

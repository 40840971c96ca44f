// ONNX export: the model's structure (names, dynamic batch, opset, FP32 initializers in
// PyTorch's layout, metadata) read back through protobuf, onnx::checker on the MLP and on
// a hand-built graph of every emitter, and the errors. Numerical agreement with OpenCV is
// checked by tests/interop/check_interop.py.
#include <doctest/doctest.h>

#include <onnx/checker.h>

#include <siam/io/onnx.hpp>
#include <siam/siamese.hpp>

#include <filesystem>

using siam::Cpu;

namespace {
onnx::ModelProto round_trip(const onnx::ModelProto& m) {
  std::string bytes;
  REQUIRE(m.SerializeToString(&bytes));
  onnx::ModelProto back;
  REQUIRE(back.ParseFromString(bytes));
  return back;
}
std::string meta(const onnx::ModelProto& m, const std::string& key) {
  for (const auto& p : m.metadata_props())
    if (p.key() == key) return p.value();
  return "<missing>";
}
}  // namespace

TEST_CASE("an MLP exports as a checked ONNX model") {
  siam::Rng rng(1);
  auto net = siam::nn::mlp<float, Cpu>({6, 4, 2}, rng);
  siam::io::OnnxOptions opt;
  opt.metadata["trained_on"] = "synthetic digits";
  const auto m = round_trip(siam::io::to_onnx(net, opt));
  CHECK_NOTHROW(onnx::checker::check_model(m));
  CHECK(m.opset_import(0).version() == 13);
  CHECK(m.producer_name() == "siam");
  CHECK(m.producer_version() == SIAM_VERSION_STRING);
  CHECK(meta(m, "architecture") == net.describe());
  CHECK(meta(m, "input_shape") == "6");
  CHECK(meta(m, "trained_on") == "synthetic digits");
  const auto& g = m.graph();
  REQUIRE(g.input_size() == 1);
  REQUIRE(g.output_size() == 1);
  CHECK(g.input(0).name() == "images");
  CHECK(g.output(0).name() == "embedding");
  const auto& in = g.input(0).type().tensor_type().shape();
  REQUIRE(in.dim_size() == 2);
  CHECK(in.dim(0).dim_param() == "batch");
  CHECK(in.dim(1).dim_value() == 6);
  CHECK(g.output(0).type().tensor_type().shape().dim(1).dim_value() == 2);
  REQUIRE(g.node_size() == 3);
  CHECK(g.node(0).op_type() == "Gemm");
  CHECK(g.node(1).op_type() == "Relu");
  CHECK(g.node(2).op_type() == "Gemm");
  CHECK(g.node(2).output(0) == "embedding");
  // The first weight is stored [out x in] with transB = 1.
  const auto& w = g.initializer(0);
  CHECK(w.data_type() == onnx::TensorProto::FLOAT);
  REQUIRE(w.dims_size() == 2);
  CHECK(w.dims(0) == 4);
  CHECK(w.dims(1) == 6);
  const auto siam_w = net.parameters()[0]->value.to_vector();  // [6 x 4]
  CHECK(w.float_data(1 * 6 + 5) == siam_w[5 * 4 + 1]);
}

TEST_CASE("NCHW input in front of an MLP is flattened; options and errors") {
  siam::Rng rng(2);
  auto net = siam::nn::mlp<double, Cpu>({12, 3}, rng);
  siam::io::OnnxOptions opt;
  opt.input_shape = {1, 3, 4};
  opt.opset = 17;
  const auto m = siam::io::to_onnx(net, opt);
  CHECK_NOTHROW(onnx::checker::check_model(m));
  CHECK(m.graph().node(0).op_type() == "Flatten");
  CHECK(m.graph().input(0).type().tensor_type().shape().dim_size() == 4);
  opt.input_shape = {1, 3, 5};
  CHECK_THROWS_WITH_AS(siam::io::to_onnx(net, opt),
                       doctest::Contains("export_onnx: layers.0 Dense(12, 3): input [1 x 3 x 5] "
                                         "has 15 features, expected 12"),
                       siam::shape_error);
  opt.input_shape = {};
  opt.opset = 9;
  CHECK_THROWS_AS(siam::io::to_onnx(net, opt), siam::value_error);
  siam::nn::Sequential<double, Cpu> empty;
  CHECK_THROWS_AS(siam::io::to_onnx(empty), siam::value_error);
  siam::nn::Sequential<double, Cpu> relu_only;
  relu_only.add<siam::nn::ReLU<double, Cpu>>();
  CHECK_THROWS_WITH_AS(siam::io::to_onnx(relu_only), doctest::Contains("input_shape"),
                       siam::value_error);
  CHECK_THROWS_AS(siam::io::export_onnx(net, "no/such/dir/m.onnx"), siam::io_error);
}

TEST_CASE("every emitter forms a valid graph (Conv, MaxPool, Flatten, Tanh, Sigmoid, L2)") {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("emitters");
  siam::io::OnnxGraph b(*g);
  namespace e = siam::io::onnx_emit;
  std::string x = b.fresh("images");
  x = e::conv2d(b, x, std::vector<float>(2 * 1 * 3 * 3, 0.1f), 2, 1, 3, 3, {0.5f, -0.5f}, 1, 1);
  x = e::activation(b, x, "Tanh");
  x = e::max_pool2d(b, x, 2, 2);
  x = e::flatten(b, x);
  x = e::dense(b, x, std::vector<float>(18 * 4, 0.2f), 18, 4, {});
  x = e::activation(b, x, "Sigmoid");
  x = e::l2_normalize(b, x, 1e-12f);
  x = e::l2_normalize(b, x, 0.0f);
  siam::io::onnx_value_info(*g->add_input(), "images", {1, 6, 6});
  siam::io::onnx_value_info(*g->add_output(), x, {4});
  CHECK_NOTHROW(onnx::checker::check_model(m));
  std::vector<std::string> ops;
  for (const auto& n : g->node())
    ops.push_back(n.op_type());
  CHECK(ops == std::vector<std::string>{"Conv", "Tanh", "MaxPool", "Flatten", "Gemm", "Sigmoid",
                                        "ReduceSumSquare", "Add", "Sqrt", "Div", "ReduceL2",
                                        "Div"});
  CHECK_THROWS_AS(b.initializer("w", {2, 2}, {1.0f}), siam::shape_error);
}

namespace {
// The ops of a graph, in order.
std::vector<std::string> ops_of(const onnx::ModelProto& m) {
  std::vector<std::string> ops;
  for (const auto& n : m.graph().node())
    ops.push_back(n.op_type());
  return ops;
}
// L2 normalisation must end the graph as ReduceL2(x, axes 1, keepdims) -> Div(x, norm): the
// form OpenCV 4.6's importer fuses into its Normalize layer (with an epsilon, Clip, Max or
// after reshaping, it fails to import after a Flatten or Gemm).
void check_l2_tail(const onnx::ModelProto& m) {
  const auto& g = m.graph();
  REQUIRE(g.node_size() >= 2);
  const auto& norm = g.node(g.node_size() - 2);
  const auto& div = g.node(g.node_size() - 1);
  REQUIRE(norm.op_type() == "ReduceL2");
  REQUIRE(div.op_type() == "Div");
  CHECK(div.input(0) == norm.input(0));
  CHECK(div.input(1) == norm.output(0));
  CHECK(div.output(0) == "embedding");
  bool axes = false, keep = false;
  for (const auto& a : norm.attribute()) {
    if (a.name() == "axes") axes = a.ints_size() == 1 && a.ints(0) == 1;
    if (a.name() == "keepdims") keep = a.i() == 1;
  }
  CHECK(axes);
  CHECK(keep);
}
}  // namespace

TEST_CASE("L2 normalisation exports in the form OpenCV imports: a CNN and an MLP on images") {
  using namespace siam::nn;
  siam::Rng rng(4);
  Sequential<float, Cpu> cnn;
  cnn.add<Conv2D<float, Cpu>>(1, 4, 3, rng);
  cnn.add<ReLU<float, Cpu>>();
  cnn.add<MaxPool2D<float, Cpu>>(2);
  cnn.add<Flatten<float, Cpu>>();
  cnn.add<Dense<float, Cpu>>(4 * 13 * 13, 8, rng);
  cnn.add<L2Normalize<float, Cpu>>();
  cnn.set_input_shape(siam::Shape{1, 28, 28});
  const auto m = round_trip(siam::io::to_onnx(cnn));
  CHECK_NOTHROW(onnx::checker::check_model(m));
  CHECK(ops_of(m) ==
        std::vector<std::string>{"Conv", "Relu", "MaxPool", "Flatten", "Gemm", "ReduceL2", "Div"});
  check_l2_tail(m);
  CHECK(m.graph().output(0).type().tensor_type().shape().dim(1).dim_value() == 8);

  auto mlp = siam::nn::mlp<float, Cpu>({784, 16, 4}, rng);
  mlp.add<L2Normalize<float, Cpu>>();
  siam::io::OnnxOptions opt;
  opt.input_shape = {1, 28, 28};
  const auto m2 = round_trip(siam::io::to_onnx(mlp, opt));
  CHECK_NOTHROW(onnx::checker::check_model(m2));
  CHECK(ops_of(m2) ==
        std::vector<std::string>{"Flatten", "Gemm", "Relu", "Gemm", "ReduceL2", "Div"});
  check_l2_tail(m2);

  // L2 normalisation of image-shaped examples has no exported form: said, with the layer.
  Sequential<float, Cpu> bad;
  bad.add<L2Normalize<float, Cpu>>();
  bad.set_input_shape(siam::Shape{1, 4, 4});
  CHECK_THROWS_WITH_AS(siam::io::to_onnx(bad),
                       doctest::Contains("export_onnx: layers.0 L2Normalize: examples [1 x 4 x 4]"),
                       siam::value_error);
}

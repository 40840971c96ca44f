// A program's own layer kind, defined here and nowhere in the library: its class alone
// (kind name, builder, output shape, tensor names, ONNX form) makes it work with
// nn::build, model files, safetensors and ONNX export, when named in nn::LayerKinds<...>.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <siam/io/file.hpp>
#include <siam/io/model_file.hpp>
#include <siam/io/safetensors.hpp>
#include <siam/siamese.hpp>
#if defined(SIAM_TEST_ONNX)
#include <onnx/checker.h>

#include <siam/io/onnx.hpp>
#endif

using namespace siam;
using siam::Cpu;

namespace {

/// y = x + shift, one learned value per feature (PyTorch: a module with a `bias`).
template <class T, class B>
class Shift final : public nn::Layer<T, B> {
 public:
  static constexpr const char* kind = "Shift";
  static std::unique_ptr<nn::Layer<T, B>> from_spec(const nn::LayerSpec& s, Rng&) {
    return std::make_unique<Shift>(s.get_int("features", 1, nn::LayerSpec::max_size));
  }
  explicit Shift(index_t features) : b_("b", Tensor<T, B>(Shape{features})) {}

  Var<T, B> forward(Var<T, B> x) override { return add_bias(x, x.tape().param(b_)); }
  Shape output_shape(const Shape& in) const override {
    if (in.size() != features())
      throw shape_error(describe() + ": input " + in.str() + ", expected " +
                        std::to_string(features()) + " features");
    return in;
  }
  std::vector<Parameter<T, B>*> parameters() override { return {&b_}; }
  std::vector<nn::TensorName> tensor_names() const override { return {{"bias"}}; }
  std::string describe() const override { return "Shift(" + std::to_string(features()) + ")"; }
  nn::LayerSpec spec() const override {
    return nn::LayerSpec{kind, {}}.set("features", double(features()));
  }
  std::string emit(nn::GraphEmitter& g, const std::string& x, const Shape&) const override {
    const auto v = b_.value.to_vector();
    const std::string c = g.constant("bias", {features()}, std::vector<float>(v.begin(), v.end()));
    return g.op("Add", {x, c}, {}, "shift");
  }
  index_t features() const { return b_.value.shape()[0]; }
  Parameter<T, B>& shift() { return b_; }

 private:
  Parameter<T, B> b_;
};

using MyKinds = nn::LayerKinds<Shift>;
static_assert(nn::LayerKind<Shift, float, Cpu>);

struct TempDir {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("siam-layer-extension-" + std::to_string(::getpid()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::vector<nn::LayerSpec> my_specs() {
  return {nn::LayerSpec{"Dense", {}}.set("in", 4).set("out", 3),
          nn::LayerSpec{"Shift", {}}.set("features", 3)};
}

std::vector<float> run(nn::Sequential<float, Cpu>& net, const Tensor<float, Cpu>& x) {
  Tape<float, Cpu> tape;
  return net.forward(tape.constant(x)).value().to_vector();
}

}  // namespace

TEST_CASE("a layer kind defined in a program: spec, build, model file, safetensors, ONNX") {
  Rng rng(3);
  // The library does not know the kind: an unknown kind, named with the known ones.
  try {
    (void)nn::build<float, Cpu>(my_specs(), Shape{4}, rng);
    FAIL("built a network with an unknown layer kind");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()).find("unknown layer kind in 'Shift features=3'") !=
          std::string::npos);
  }
  auto net = nn::build<float, Cpu, MyKinds>(my_specs(), Shape{4}, rng);
  REQUIRE(net.size() == 2);
  auto* shift = dynamic_cast<Shift<float, Cpu>*>(&net[1]);
  REQUIRE(shift != nullptr);
  shift->shift().value = Tensor<float, Cpu>::from(Shape{3}, {0.5f, -1.0f, 2.0f});
  CHECK(net.output_shape(Shape{4}) == Shape{3});
  CHECK_THROWS_AS(((void)nn::build<float, Cpu, MyKinds>(my_specs(), Shape{5}, rng)), shape_error);
  const auto specs = nn::specs(net);
  REQUIRE(specs.size() == 2);
  CHECK(specs[1].str() == "Shift features=3");

  const auto x = Tensor<float, Cpu>::from(Shape{2, 4}, {1, 2, 3, 4, -1, 0, 1, 0.5f});
  const auto want = run(net, x);
  // The shift is applied (the Dense output alone differs by it).
  {
    Tape<float, Cpu> tape;
    const auto dense = net[0].forward(tape.constant(x)).value().to_vector();
    CHECK(want[0] == doctest::Approx(dense[0] + 0.5f));
    CHECK(want[4] == doctest::Approx(dense[4] - 1.0f));
  }

  TempDir dir;
  SUBCASE("model file") {
    const auto f = dir.path / "m.siam";
    io::save_model(f, net);
    CHECK_THROWS_AS(((void)io::load_model<float, Cpu>(f)), io_error);  // without the kind
    auto back = io::load_model<float, Cpu, MyKinds>(f);
    CHECK(nn::specs(back)[1].str() == "Shift features=3");
    CHECK(run(back, x) == want);
  }
  SUBCASE("safetensors: PyTorch's names, and back") {
    const auto sd = io::state_dict(net);
    std::vector<std::string> names;
    for (const auto& r : sd)
      names.push_back(r.name);
    CHECK(names == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.1.bias"});
    const auto f = dir.path / "m.safetensors";
    io::save_safetensors(f, net);
    Rng other(99);
    auto fresh = nn::build<float, Cpu, MyKinds>(my_specs(), Shape{4}, other);
    CHECK(run(fresh, x) != want);
    io::load_safetensors(f, fresh);
    CHECK(run(fresh, x) == want);
  }
#if defined(SIAM_TEST_ONNX)
  SUBCASE("ONNX export") {
    const auto m = io::to_onnx(net);
    CHECK_NOTHROW(onnx::checker::check_model(m));
    const auto& g = m.graph();
    REQUIRE(g.node_size() == 2);
    CHECK(g.node(0).op_type() == "Gemm");
    CHECK(g.node(1).op_type() == "Add");
    CHECK(g.node(1).output(0) == "embedding");
    const auto& c = g.initializer(g.initializer_size() - 1);
    REQUIRE(c.float_data_size() == 3);
    CHECK(c.float_data(1) == -1.0f);
  }
#else
  MESSAGE("ONNX export not checked: siam was built without ONNX");
#endif
}

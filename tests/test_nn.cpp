// Layers, initialisation and Adam; the layer registry (every kind: spec -> build -> save
// -> load, output_shape against a real forward) and the shape checks that name a layer.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <map>
#include <siam/io/file.hpp>
#include <siam/io/model_file.hpp>
#include <siam/siamese.hpp>

using namespace siam;
using Td = Tensor<double, Cpu>;

namespace {
void set_grad(Parameter<double, Cpu>& p, std::initializer_list<double> g) {
  p.grad = Td::from(p.value.shape(), g);
  p.grad_fresh = false;
}
}  // namespace

TEST_CASE("Adam: three steps against values worked out by hand") {
  Parameter<double, Cpu> p("p", Td::from(Shape{2}, {1.0, -2.0}));
  optim::Adam<double, Cpu> adam({&p}, {0.1, 0.9, 0.999, 1e-8});
  // step 1, g = (0.5, -1): m = 0.1 g = (0.05, -0.1); v = 0.001 g^2 = (0.00025, 0.001)
  // mhat = m / (1 - 0.9) = (0.5, -1); vhat = v / (1 - 0.999) = (0.25, 1)
  // p -= 0.1 * mhat / (sqrt(vhat) + 1e-8)
  set_grad(p, {0.5, -1.0});
  adam.step();
  double p0 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), p1 = -2.0 - 0.1 * -1.0 / (1.0 + 1e-8);
  CHECK(p.value[0] == doctest::Approx(p0).epsilon(1e-14));
  CHECK(p.value[1] == doctest::Approx(p1).epsilon(1e-14));
  // step 2, g = (0.25, 0.5):
  // m = 0.9 (0.05, -0.1) + 0.1 (0.25, 0.5) = (0.07, -0.04)
  // v = 0.999 (0.00025, 0.001) + 0.001 (0.0625, 0.25) = (0.00031225, 0.001249)
  // bias corrections: 1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999
  set_grad(p, {0.25, 0.5});
  adam.step();
  p0 -= 0.1 * (0.07 / 0.19) / (std::sqrt(0.00031225 / 0.001999) + 1e-8);
  p1 -= 0.1 * (-0.04 / 0.19) / (std::sqrt(0.001249 / 0.001999) + 1e-8);
  CHECK(p.value[0] == doctest::Approx(p0).epsilon(1e-12));
  CHECK(p.value[1] == doctest::Approx(p1).epsilon(1e-12));
  // step 3, g = (-1, 0):
  // m = 0.9 (0.07, -0.04) + 0.1 (-1, 0) = (-0.037, -0.036)
  // v = 0.999 (0.00031225, 0.001249) + 0.001 (1, 0) = (0.00131193775, 0.001247751)
  // bias corrections: 1 - 0.9^3 = 0.271, 1 - 0.999^3 = 0.002997001
  set_grad(p, {-1.0, 0.0});
  adam.step();
  p0 -= 0.1 * (-0.037 / 0.271) / (std::sqrt(0.00131193775 / 0.002997001) + 1e-8);
  p1 -= 0.1 * (-0.036 / 0.271) / (std::sqrt(0.001247751 / 0.002997001) + 1e-8);
  CHECK(p.value[0] == doctest::Approx(p0).epsilon(1e-12));
  CHECK(p.value[1] == doctest::Approx(p1).epsilon(1e-12));
  CHECK(adam.steps() == 3);
  CHECK(adam.first_moments()[0][0] == doctest::Approx(-0.037));
  CHECK(adam.second_moments()[0][1] == doctest::Approx(0.001247751));
}

TEST_CASE("Adam: rejects bad hyper-parameters") {
  using Adam = optim::Adam<double, Cpu>;
  Parameter<double, Cpu> p("p", Td(Shape{1}));
  auto make = [&](optim::AdamOptions o) { Adam a({&p}, o); };
  CHECK_THROWS_AS(make({0.0}), value_error);
  CHECK_THROWS_AS(make({-1.0}), value_error);
  CHECK_THROWS_AS(make({1e-3, 1.0}), value_error);
  CHECK_THROWS_AS(make({1e-3, 0.9, 0.999, 0.0}), value_error);
}

TEST_CASE("He and Glorot initialisation: seeded, bit-identical, right statistics") {
  Rng a(7), b(7), c(8);
  auto w1 = nn::init_weights<float, Cpu>(784, 1024, nn::Init::he, a);
  auto w2 = nn::init_weights<float, Cpu>(784, 1024, nn::Init::he, b);
  auto w3 = nn::init_weights<float, Cpu>(784, 1024, nn::Init::he, c);
  CHECK(w1.to_vector() == w2.to_vector());
  CHECK(w1.to_vector() != w3.to_vector());
  double s = 0, s2 = 0;
  for (float x : w1.to_vector()) {
    s += x;
    s2 += double(x) * x;
  }
  const double n = 784.0 * 1024.0, mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  CHECK(std::abs(mean) < 1e-3);
  CHECK(sd == doctest::Approx(std::sqrt(2.0 / 784.0)).epsilon(0.01));
  auto g = nn::init_weights<double, Cpu>(30, 20, nn::Init::glorot_uniform, a);
  const double lim = std::sqrt(6.0 / 50.0);
  double mx = 0;
  for (double x : g.to_vector())
    mx = std::max(mx, std::abs(x));
  CHECK(mx <= lim);
  CHECK(mx > 0.9 * lim);
  CHECK_THROWS_AS((nn::init_weights<float, Cpu>(0, 3, nn::Init::he, a)), value_error);
}

TEST_CASE("Sequential: composed at run time; Dense+ReLU fusion changes nothing") {
  Rng r1(3), r2(3);
  auto net = nn::mlp<double, Cpu>({5, 8, 8, 2}, r1);
  CHECK(net.describe() == "Sequential(Dense(5, 8), ReLU, Dense(8, 8), ReLU, Dense(8, 2))");
  CHECK(net.parameters().size() == 6);
  auto ref = nn::mlp<double, Cpu>({5, 8, 8, 2}, r2);
  Rng rx(4);
  Td x(Shape{3, 5});
  for (index_t i = 0; i < x.size(); ++i)
    x[i] = rx.uniform(-1, 1);
  Tape<double, Cpu> t1, t2;
  Var<double, Cpu> y1 = net.forward(t1.constant(x));
  // unfused: each layer's own forward
  Var<double, Cpu> y2 = t2.constant(x);
  for (std::size_t i = 0; i < ref.size(); ++i)
    y2 = ref[i].forward(y2);
  CHECK(y1.shape() == Shape{3, 2});
  CHECK(y1.value().to_vector() == y2.value().to_vector());
  t1.backward(sum(y1));
  t2.backward(sum(y2));
  auto p1 = net.parameters(), p2 = ref.parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) {
    const auto g1 = p1[i]->gradient().to_vector(), g2 = p2[i]->gradient().to_vector();
    REQUIRE(g1.size() == g2.size());
    for (std::size_t j = 0; j < g1.size(); ++j)
      CHECK(g1[j] == doctest::Approx(g2[j]).epsilon(1e-12));
  }
  CHECK_THROWS_AS((nn::mlp<double, Cpu>({5}, r1)), value_error);
}

TEST_CASE("a small Siamese network learns: the contrastive loss falls") {
  Rng rng(5);
  auto net = nn::mlp<float, Cpu>({4, 16, 2}, rng);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-2});
  // two clusters in 4-D; pairs within a cluster are similar
  Tensor<float, Cpu> x(Shape{32, 4}), y(Shape{16});
  Tape<float, Cpu> tape;
  float first = 0, last = 0;
  for (int it = 0; it < 200; ++it) {
    for (index_t i = 0; i < 16; ++i) {
      const bool same = rng.bernoulli(0.5);
      const int c1 = static_cast<int>(rng.below(2)), c2 = same ? c1 : 1 - c1;
      for (index_t j = 0; j < 4; ++j) {
        x(i, j) = float((c1 ? 1.0 : -1.0) * (j % 2 ? 1 : -1) + 0.3 * rng.normal());
        x(16 + i, j) = float((c2 ? 1.0 : -1.0) * (j % 2 ? 1 : -1) + 0.3 * rng.normal());
      }
      y[i] = same ? 1.f : 0.f;
    }
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(x));
    auto loss =
        contrastive_loss(slice_rows(f, 0, 16), slice_rows(f, 16, 16), tape.constant(y), {1.0});
    tape.backward(loss);
    adam.step();
    if (it < 10) first += loss.value().item();
    if (it >= 190) last += loss.value().item();
  }
  CHECK(last < 0.3f * first);
}

namespace {
// One case per layer kind: its spec, a network around it (layers before it make its input
// fit) and the per-example input shape of that network.
struct KindCase {
  std::vector<nn::LayerSpec> layers;
  Shape input;
};
std::map<std::string, KindCase> kind_cases() {
  using S = nn::LayerSpec;
  const S conv = S{"Conv2D", {}}
                     .set("in", 2)
                     .set("out", 3)
                     .set("kernel", 3)
                     .set("stride", 2)
                     .set("padding", 1)
                     .set("bias", 1);
  const S conv_nb = S{"Conv2D", {}}
                        .set("in", 3)
                        .set("out", 1)
                        .set("kernel", 1)
                        .set("stride", 1)
                        .set("padding", 0)
                        .set("bias", 0);
  return {
      {"Dense", {{S{"Dense", {}}.set("in", 6).set("out", 4)}, Shape{6}}},
      {"ReLU", {{S{"ReLU", {}}}, Shape{5}}},
      {"Tanh", {{S{"Tanh", {}}}, Shape{2, 3}}},
      {"Sigmoid", {{S{"Sigmoid", {}}}, Shape{1, 2, 3}}},
      {"L2Normalize", {{S{"L2Normalize", {}}.set("eps", 1e-6)}, Shape{7}}},
      {"Conv2D", {{conv, conv_nb}, Shape{2, 5, 6}}},
      {"MaxPool2D", {{S{"MaxPool2D", {}}.set("kernel", 3).set("stride", 2)}, Shape{2, 7, 5}}},
      {"Flatten", {{S{"Flatten", {}}}, Shape{2, 3, 2}}},
      {"Reshape", {{S{"Reshape", {}}.set("d1", 2).set("d2", 3).set("d3", 2)}, Shape{12}}},
      {"BatchNorm",
       {{conv, S{"BatchNorm", {}}.set("features", 3).set("eps", 1e-5).set("momentum", 0.1)},
        Shape{2, 5, 6}}},
      {"Dropout", {{S{"Dropout", {}}.set("p", 0.25)}, Shape{4}}},
      {"GlobalAvgPool", {{S{"GlobalAvgPool", {}}}, Shape{2, 3, 4}}},
      {"AvgPool2D", {{S{"AvgPool2D", {}}.set("kernel", 2).set("stride", 2)}, Shape{2, 5, 4}}},
      // a Residual line is followed by its body's and projection's layers
      {"Residual",
       {{S{"Residual", {}}.set("body", 1).set("projection", 1), conv, conv}, Shape{2, 5, 6}}},
  };
}
Shape batch_of(index_t n, const Shape& s) {
  switch (s.rank()) {
    case 1:
      return Shape{n, s[0]};
    case 2:
      return Shape{n, s[0], s[1]};
    default:
      return Shape{n, s[0], s[1], s[2]};
  }
}
}  // namespace

TEST_CASE("registry: every layer kind round-trips spec -> build -> save -> load") {
  const auto cases = kind_cases();
  // A kind added to the registry without a case here fails this test.
  for (const auto& k : nn::layer_kind_names<double, Cpu>())
    CHECK_MESSAGE(cases.count(k) == 1, "no registry test case for the layer kind " << k);
  const auto dir =
      std::filesystem::temp_directory_path() / ("siam-registry-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const auto& [kind, c] : cases) {
    CAPTURE(kind);
    Rng rng(11);
    auto net = nn::build<double, Cpu>(c.layers, c.input, rng);
    const auto flat = nn::specs(net);  // a Residual's layers follow its line
    REQUIRE(flat.size() == c.layers.size());
    for (std::size_t i = 0; i < flat.size(); ++i)
      CHECK(flat[i].str() == c.layers[i].str());  // the spec rebuilds the same layer
    for (std::size_t i = 0; i < net.size(); ++i) {
      CHECK(net[i].tensor_names().size() == net[i].parameters().size());
      CHECK(net[i].buffer_names().size() == net[i].buffers().size());
    }
    // output_shape agrees with a real forward, layer by layer, on a batch of 3.
    Rng rx(12);
    Td x(batch_of(3, c.input));
    for (index_t i = 0; i < x.size(); ++i)
      x[i] = rx.uniform(-1, 1);
    Tape<double, Cpu> t;
    Var<double, Cpu> y = t.constant(x);
    Shape s = c.input;
    for (std::size_t i = 0; i < net.size(); ++i) {
      y = net[i].forward(y);
      s = net[i].output_shape(s);
      CHECK(y.shape() == batch_of(3, s));
    }
    CHECK(net.output_shape(c.input) == s);
    // save -> load: the same specs, parameters and outputs.
    const auto file = dir / (kind + ".siam");
    io::save_model(file, net);
    auto back = io::load_model<double, Cpu>(file);
    REQUIRE(back.size() == net.size());
    for (std::size_t i = 0; i < net.size(); ++i)
      CHECK(back[i].spec().str() == net[i].spec().str());
    CHECK(back.input_shape() == c.input);
    const auto p1 = net.parameters(), p2 = back.parameters();
    REQUIRE(p1.size() == p2.size());
    for (std::size_t i = 0; i < p1.size(); ++i)
      CHECK(p1[i]->value.to_vector() == p2[i]->value.to_vector());
    CHECK(back.embed(x).to_vector() == net.embed(x).to_vector());
  }
  std::filesystem::remove_all(dir);
  Rng rng(1);
  CHECK_THROWS_WITH_AS((nn::make_layer<double, Cpu>(nn::LayerSpec{"NoSuchLayer", {}}, rng)),
                       doctest::Contains("known: Dense, ReLU"), value_error);
}

TEST_CASE("model files keep class names; files without them load as before") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("siam-classes-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Rng rng(3);
  auto net = nn::mlp<float, Cpu>({4, 6, 2}, rng);
  net.set_input_shape(Shape{4});
  const std::vector<std::string> names{"Abyssinian", "beagle", "caf\xc3\xa9 au lait"};
  io::save_model(dir / "named.siam", net, names);
  CHECK(io::load_class_names(dir / "named.siam") == names);
  auto back = io::load_model<float, Cpu>(dir / "named.siam");  // the names change nothing else
  const auto p1 = net.parameters(), p2 = back.parameters();
  REQUIRE(p1.size() == p2.size());
  for (std::size_t i = 0; i < p1.size(); ++i)
    CHECK(p1[i]->value.to_vector() == p2[i]->value.to_vector());
  io::load_model(dir / "named.siam", back);
  // Without names: no record, the file byte for byte what it was before names existed.
  io::save_model(dir / "plain.siam", net);
  auto old = io::model_records(net);
  for (auto& r : io::parameter_records(net.state()))
    old.push_back(std::move(r));
  io::save_archive(dir / "old.siam", old);
  CHECK(io::read_file(dir / "plain.siam", "test") == io::read_file(dir / "old.siam", "test"));
  CHECK(io::load_class_names(dir / "old.siam").empty());
  CHECK(io::load_model<float, Cpu>(dir / "old.siam").parameters().size() == p1.size());
  // Names that one line each cannot hold; a malformed record names the file.
  CHECK_THROWS_WITH_AS(io::save_model(dir / "bad.siam", net, {"a", "b\nc"}),
                       doctest::Contains("class 1 ('b"), value_error);
  CHECK_THROWS_AS(io::save_model(dir / "bad.siam", net, {"a", ""}), value_error);
  CHECK_FALSE(std::filesystem::exists(dir / "bad.siam"));
  const std::uint64_t seven = 7;
  auto odd = old;
  odd.push_back(io::make_record("model/classes", {1}, &seven, 1));
  io::save_archive(dir / "odd.siam", odd);
  CHECK_THROWS_WITH_AS(io::load_class_names(dir / "odd.siam"),
                       doctest::Contains("odd.siam: model/classes is not a text record"), io_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("presets::lenet_specs sizes the LeNet for its input") {
  Rng rng(3);
  // 28 x 28 grey: Caffe's LeNet, the Dense layer after the convolutions takes 50 x 4 x 4.
  CHECK(presets::lenet_specs(Shape{1, 28, 28}, 5)[7].get("in") == 800);
  // 3 x 64 x 64: 64 - 4 = 60, / 2 = 30, - 4 = 26, / 2 = 13, so 50 x 13 x 13 = 8,450; a
  // 64 x 40 input: 50 x 13 x 7; and the network builds and embeds at that shape.
  const auto rgb = presets::lenet_specs(Shape{3, 64, 64}, 7);
  CHECK(rgb[0].get("in") == 3);
  CHECK(rgb[7].get("in") == 8450);
  CHECK(presets::lenet_specs(Shape{1, 64, 40})[7].get("in") == 50 * 13 * 7);
  auto net = nn::build<float, Cpu>(rgb, Shape{3, 64, 64}, rng);
  CHECK(net.output_shape(Shape{3, 64, 64}) == Shape{7});
  auto smallest =
      nn::build<float, Cpu>(presets::lenet_specs(Shape{1, 16, 16}), Shape{1, 16, 16}, rng);
  CHECK(smallest.output_shape(Shape{1, 16, 16}) == Shape{2});
  // The one-argument form is the 28 x 28 grey network.
  const auto a = presets::lenet_specs(4), b = presets::lenet_specs(Shape{1, 28, 28}, 4);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK(a[i].str() == b[i].str());
  CHECK_THROWS_WITH_AS(presets::lenet_specs(Shape{1, 15, 28}),
                       "presets::lenet_specs: the input must be [C x H x W] with C >= 1 and H, W "
                       ">= 16, got [1 x 15 x 28]",
                       shape_error);
  CHECK_THROWS_AS(presets::lenet_specs(Shape{784}), shape_error);
  CHECK_THROWS_WITH_AS(presets::lenet_specs(Shape{1, 28, 28}, 0),
                       "presets::lenet_specs: embedding 0 must be >= 1", value_error);
}

TEST_CASE("shape errors name the layer and both shapes, at build and in forward") {
  // LeNet's specs with a 16-D output and a wrong Dense input (800 where 1250 arrive: the
  // input is 32 x 32, not 28 x 28).
  auto specs = presets::lenet_specs(16);
  specs[7] = nn::LayerSpec{"Dense", {}}.set("in", 800).set("out", 16);
  specs.resize(8);
  Rng rng(2);
  auto build = [&](Shape in) { return nn::build<float, Cpu>(specs, in, rng); };
  CHECK_THROWS_WITH_AS(build(Shape{1, 32, 32}),
                       "layers.7 Dense(800, 16): input [1250] has 1250 features, expected 800",
                       shape_error);
  CHECK_NOTHROW(build(Shape{1, 28, 28}));
  {  // without the Flatten the Dense sees image-shaped examples: both shapes are named
    auto no_flatten = specs;
    no_flatten.erase(no_flatten.begin() + 6);
    CHECK_THROWS_WITH_AS(
        (nn::build<float, Cpu>(no_flatten, Shape{1, 32, 32}, rng)),
        "layers.6 Dense(800, 16): input [50 x 5 x 5] has 1250 features, expected 800", shape_error);
  }
  // A convolution on too few channels, a pool larger than its input.
  CHECK_THROWS_WITH_AS(build(Shape{3, 28, 28}),
                       doctest::Contains("layers.0 Conv2D(1, 20, 5, stride 1, padding 0): input "
                                         "[3 x 28 x 28], expected [1 x H x W]"),
                       shape_error);
  CHECK_THROWS_WITH_AS(build(Shape{1, 14, 14}),
                       doctest::Contains("layers.5 MaxPool2D(2, stride 2): input [50 x 1 x 1]"),
                       shape_error);
  // Without an input shape nothing is checked at build; forward names the layer.
  auto net = build(Shape{});
  Tensor<float, Cpu> x(Shape{4, 1, 32, 32});
  Tape<float, Cpu> t;
  CHECK_THROWS_WITH_AS(net.forward(t.constant(x)),
                       "layers.7 Dense(800, 16): input [4 x 1250] has 1250 features per example, "
                       "expected 800",
                       shape_error);
  // A Dense followed by ReLU runs fused; its error names the Dense.
  auto mlp = nn::mlp<float, Cpu>({6, 5, 2}, rng);
  Tensor<float, Cpu> x7(Shape{2, 7});
  CHECK_THROWS_WITH_AS(mlp.forward(t.constant(x7)),
                       "layers.0 Dense(6, 5): input [2 x 7] has 7 features per example, "
                       "expected 6",
                       shape_error);
  CHECK_THROWS_WITH_AS(mlp.output_shape(Shape{7}),
                       "layers.0 Dense(6, 5): input [7] has 7 features, expected 6", shape_error);
  CHECK(mlp.output_shape(Shape{6}) == Shape{2});
}

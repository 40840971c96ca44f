// Layers, initialisation and Adam.
#include <doctest/doctest.h>

#include <cmath>
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

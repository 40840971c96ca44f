// The toolkit's ops (elementwise.hpp, reduce.hpp, structure.hpp, metric.hpp) against
// central differences in double precision, on ordinary, 1 x 1 and empty shapes, with
// their values checked against plain loops and their errors thrown identically with and
// without gradients; and the tape's own limits.
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "gradcheck.hpp"

using gradcheck::check;
using gradcheck::check_throws_identically;
using gradcheck::random;
using gradcheck::Tape;
using gradcheck::Tensor;
using gradcheck::Var;
using siam::index_t;
using siam::Rng;
using siam::Shape;
using siam::shape_error;
using siam::value_error;
using VarList = std::vector<Var>;

namespace {
gradcheck::Fn projected(std::function<Var(Tape&, VarList&)> op, Shape out, std::uint64_t seed) {
  Rng rng(seed);
  auto r = std::make_shared<Tensor>(random(out, rng));
  return [op, r](Tape& t, VarList& v) { return gradcheck::project(t, op(t, v), *r); };
}
// Values in [lo, hi] with alternating signs when `sign`, so kinks stay away.
Tensor away_from_zero(Shape s, Rng& rng, double lo, double hi) {
  Tensor t = random(s, rng, lo, hi);
  for (index_t i = 0; i < t.size(); ++i)
    t[i] *= (i % 2 ? -1 : 1);
  return t;
}
const std::vector<Shape> kShapes{Shape{3, 4}, Shape{1, 1}, Shape{0, 4}};
}  // namespace

TEST_CASE("gradient: arithmetic with scalars on either side, negation, division") {
  Rng rng(20);
  for (Shape s : kShapes) {
    CAPTURE(s.str());
    Tensor a = random(s, rng), b = random(s, rng, 0.5, 2);
    check(projected([](Tape&, VarList& v) { return v[0] + 0.5; }, s, 1), {a});
    check(projected([](Tape&, VarList& v) { return 0.5 + v[0]; }, s, 2), {a});
    check(projected([](Tape&, VarList& v) { return v[0] - 2.0; }, s, 3), {a});
    check(projected([](Tape&, VarList& v) { return 2.0 - v[0]; }, s, 4), {a});
    check(projected([](Tape&, VarList& v) { return v[0] * 3.0; }, s, 5), {a});
    check(projected([](Tape&, VarList& v) { return 3.0 * v[0]; }, s, 6), {a});
    check(projected([](Tape&, VarList& v) { return v[0] / 4.0; }, s, 7), {a});
    check(projected([](Tape&, VarList& v) { return 4.0 / v[0]; }, s, 8), {b});
    check(projected([](Tape&, VarList& v) { return -v[0]; }, s, 9), {a});
    check(projected([](Tape&, VarList& v) { return v[0] / v[1]; }, s, 10), {a, b});
    check(projected([](Tape&, VarList& v) { return v[1] / v[1]; }, s, 11), {a, b});
  }
  Tape t;
  Tensor a(Shape{2, 3}), b(Shape{3, 2});
  CHECK_THROWS_AS(t.constant(a) / t.constant(b), shape_error);
}

TEST_CASE("gradient: exp, log, abs, tanh, sigmoid, softplus, pow, clamp") {
  Rng rng(21);
  for (Shape s : kShapes) {
    CAPTURE(s.str());
    Tensor a = random(s, rng, -2, 2), pos = random(s, rng, 0.3, 3);
    Tensor away = away_from_zero(s, rng, 0.1, 1.5);
    check(projected([](Tape&, VarList& v) { return exp(v[0]); }, s, 1), {a});
    check(projected([](Tape&, VarList& v) { return log(v[0]); }, s, 2), {pos});
    check(projected([](Tape&, VarList& v) { return abs(v[0]); }, s, 3), {away});
    check(projected([](Tape&, VarList& v) { return tanh(v[0]); }, s, 4), {a});
    check(projected([](Tape&, VarList& v) { return sigmoid(v[0]); }, s, 5), {a});
    check(projected([](Tape&, VarList& v) { return softplus(v[0]); }, s, 6), {a});
    check(projected([](Tape&, VarList& v) { return pow(v[0], 2.5); }, s, 7), {pos});
    check(projected([](Tape&, VarList& v) { return pow(v[0], -1.0); }, s, 8), {pos});
    // away from the bounds +-0.5 and 1: values of |x| in [0.1, 1.5] excluding near bounds
    Tensor c = away_from_zero(s, rng, 0.55, 0.95);
    check(projected([](Tape&, VarList& v) { return clamp(v[0], -0.5, 1.0); }, s, 9), {c});
    check(projected([](Tape&, VarList& v) { return maximum(v[0], 0.3); }, s, 10), {c});
    check(projected([](Tape&, VarList& v) { return minimum(v[0], 0.3); }, s, 11), {c});
  }
  Tape t;
  Tensor a(Shape{2, 2});
  CHECK_THROWS_AS(clamp(t.constant(a), 1.0, -1.0), value_error);
}

TEST_CASE("elementwise values: extreme inputs stay finite where the math is") {
  Tape t;
  Tensor x = Tensor::from(Shape{1, 6}, {-800, -30, -1e-9, 0, 30, 800});
  const auto sp = softplus(t.constant(x)).value().to_vector();
  const auto sg = sigmoid(t.constant(x)).value().to_vector();
  for (std::size_t i = 0; i < sp.size(); ++i) {
    const double v = x[static_cast<index_t>(i)];
    CHECK(std::isfinite(sp[i]));
    CHECK(sp[i] == doctest::Approx(v > 30 ? v : std::log1p(std::exp(v))).epsilon(1e-12));
    CHECK(sg[i] == doctest::Approx(1 / (1 + std::exp(-v))).epsilon(1e-12));
  }
  CHECK(sp[0] == 0.0);
  CHECK(sg[5] == 1.0);
}

TEST_CASE("gradient: maximum and minimum of two tensors, ties to the first operand") {
  Rng rng(22);
  for (Shape s : kShapes) {
    CAPTURE(s.str());
    Tensor a = random(s, rng), b = random(s, rng);
    // keep a and b apart so the kink is not crossed by the finite difference
    for (index_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] - b[i]) < 0.05) b[i] += 0.2;
    check(projected([](Tape&, VarList& v) { return maximum(v[0], v[1]); }, s, 1), {a, b});
    check(projected([](Tape&, VarList& v) { return minimum(v[0], v[1]); }, s, 2), {a, b});
  }
  // a tie routes the whole gradient to the first operand
  siam::Parameter<double, siam::Cpu> pa("a", Tensor::from(Shape{1, 2}, {1, 2}));
  siam::Parameter<double, siam::Cpu> pb("b", Tensor::from(Shape{1, 2}, {1, 3}));
  Tape t;
  t.backward(sum(maximum(t.param(pa), t.param(pb))));
  CHECK(pa.gradient().to_vector() == std::vector<double>{1, 0});
  CHECK(pb.gradient().to_vector() == std::vector<double>{0, 1});
}

TEST_CASE("add_relu: gradients, relu(a + b) bit for bit, one operand twice, errors") {
  Rng rng(23);
  for (Shape s : {Shape{3, 4}, Shape{1, 1}, Shape{0, 4}, Shape{2, 3, 2, 2}}) {
    CAPTURE(s.str());
    Tensor a = random(s, rng), b = random(s, rng);
    // keep a + b away from the kink at 0
    for (index_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] + b[i]) < 0.05) b[i] += 0.2;
    check(projected([](Tape&, VarList& v) { return add_relu(v[0], v[1]); }, s, 3), {a, b});
    // the same input on both sides: twice the gradient where a + a > 0
    check(projected([](Tape&, VarList& v) { return add_relu(v[0], v[0]); }, s, 4), {a});
    // an operand that needs no gradient
    check(projected(
              [&b](Tape& t, VarList& v) {
                return add_relu(t.constant(b), v[0]) + add_relu(v[0], t.constant(b));
              },
              s, 5),
          {a});
  }
  // Values and gradients equal relu(a + b)'s, NaN and zeros included; a's gradient already
  // holding a value is added to.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor av = Tensor::from(Shape{2, 3}, {nan, -1, 2, 0.5, -0.5, 3});
  const Tensor bv = Tensor::from(Shape{2, 3}, {1, 0.5, -3, -0.5, 0.25, nan});
  const Tensor w = random(Shape{2, 3}, rng);
  std::vector<double> y[2], ga[2], gb[2];
  for (int fused = 0; fused < 2; ++fused) {
    siam::Parameter<double, siam::Cpu> pa("a", Tensor(av)), pb("b", Tensor(bv));
    Tape t;
    Var va = t.param(pa), vb = t.param(pb);
    Var r = fused ? add_relu(va, vb) : relu(va + vb);
    y[fused] = Tensor(r.value()).to_vector();
    t.backward(sum(r * t.constant(w)) + sum(va * t.constant(w)));
    ga[fused] = pa.gradient().to_vector();
    gb[fused] = pb.gradient().to_vector();
  }
  for (std::size_t i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK((y[1][i] == y[0][i] || (std::isnan(y[1][i]) && std::isnan(y[0][i]))));
    CHECK((ga[1][i] == ga[0][i] || (std::isnan(ga[1][i]) && std::isnan(ga[0][i]))));
    CHECK((gb[1][i] == gb[0][i] || (std::isnan(gb[1][i]) && std::isnan(gb[0][i]))));
  }
  CHECK(y[1][2] == 0);          // 2 - 3 < 0
  CHECK(gb[1][0] == w[0]);      // NaN unit: dy passes
  CHECK(ga[1][1] == w[1]);      // off: only the second term's w
  CHECK(ga[1][3] == w[3]);      // a + b == 0 is off
  CHECK(gb[1][5] == w[5]);      // NaN from b passes dy
  CHECK(ga[1][0] == 2 * w[0]);  // NaN unit: dy to a, plus the second term's w
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return add_relu(v[0], v[1]); },
                                        {Tensor(Shape{2, 3}), Tensor(Shape{3, 2})});
  Tape t1, t2;
  CHECK_THROWS_AS((void)add_relu(t1.constant(av), t2.constant(bv)), value_error);
}

TEST_CASE("gradient: sum and mean over all, over rows, over columns, keepdims") {
  Rng rng(23);
  for (Shape s : {Shape{3, 4}, Shape{1, 1}, Shape{0, 4}, Shape{3, 0}, Shape{2, 2, 3}}) {
    CAPTURE(s.str());
    Tensor a = random(s, rng);
    check([](Tape&, VarList& v) { return sum(v[0]); }, {a});
    for (int axis : {0, 1})
      for (bool keep : {false, true}) {
        CAPTURE(axis);
        CAPTURE(keep);
        const Shape out = axis == 0 ? (keep ? Shape{1, s.cols()} : Shape{s.cols()})
                                    : (keep ? Shape{s.rows(), 1} : Shape{s.rows()});
        check(projected([axis, keep](Tape&, VarList& v) { return sum(v[0], axis, keep); }, out, 1),
              {a});
        const index_t len = axis == 0 ? s.rows() : s.cols();
        if (len > 0)
          check(
              projected([axis, keep](Tape&, VarList& v) { return mean(v[0], axis, keep); }, out, 2),
              {a});
      }
  }
  // values against loops
  Tape t;
  Tensor x = Tensor::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(sum(t.constant(x), 0).value().to_vector() == std::vector<double>{5, 7, 9});
  CHECK(sum(t.constant(x), 1, true).shape() == Shape{2, 1});
  CHECK(mean(t.constant(x), 1).value().to_vector() == std::vector<double>{2, 5});
  CHECK_THROWS_AS(sum(t.constant(x), 2), value_error);
  const Tensor empty(Shape{0, 3});
  CHECK_THROWS_AS(mean(t.constant(empty), 0), shape_error);
  CHECK_THROWS_AS(mean(t.constant(empty)), shape_error);
}

TEST_CASE("gradient: logsumexp over rows, stable for large values") {
  Rng rng(24);
  for (Shape s : {Shape{3, 5}, Shape{1, 1}, Shape{0, 3}}) {
    CAPTURE(s.str());
    Tensor a = random(s, rng, -3, 3);
    check(projected([](Tape&, VarList& v) { return logsumexp_rows(v[0]); }, Shape{s.rows(), 1}, 1),
          {a});
  }
  Tape t;
  Tensor big = Tensor::from(Shape{2, 2}, {1000, 1000, -1000, -1001});
  const auto y = logsumexp_rows(t.constant(big)).value().to_vector();
  CHECK(y[0] == doctest::Approx(1000 + std::log(2.0)));
  CHECK(y[1] == doctest::Approx(-1000 + std::log1p(std::exp(-1.0))));
}

TEST_CASE("gradient: broadcasts of rows, columns and scalars") {
  Rng rng(25);
  for (index_t r : {3, 1, 0}) {
    CAPTURE(r);
    Tensor row = random(Shape{4}, rng), row2 = random(Shape{1, 4}, rng);
    Tensor col = random(Shape{r, 1}, rng), sc = random(Shape{1}, rng);
    check(projected([r](Tape&, VarList& v) { return broadcast_rows(v[0], r); }, Shape{r, 4}, 1),
          {row});
    check(projected([r](Tape&, VarList& v) { return broadcast_rows(v[0], r); }, Shape{r, 4}, 2),
          {row2});
    check(projected([](Tape&, VarList& v) { return broadcast_cols(v[0], 5); }, Shape{r, 5}, 3),
          {col});
    check(projected(
              [r](Tape&, VarList& v) {
                return broadcast_scalar(v[0], Shape{r, 2});
              },
              Shape{r, 2}, 4),
          {sc});
    // a matrix minus its row means: the explicit-broadcast idiom
    Tensor m = random(Shape{r, 4}, rng);
    if (r > 0)
      check(projected(
                [](Tape&, VarList& v) {
                  return v[0] - broadcast_cols(mean(v[0], 1, true), v[0].shape().cols());
                },
                Shape{r, 4}, 5),
            {m});
  }
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return broadcast_rows(v[0], 2); },
                                        {Tensor(Shape{2, 3})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return broadcast_cols(v[0], 2); },
                                        {Tensor(Shape{2, 3})});
  check_throws_identically<shape_error>(
      [](Tape&, VarList& v) { return broadcast_scalar(v[0], Shape{2}); }, {Tensor(Shape{2})});
}

TEST_CASE("gradient: gather_rows with repeats (scatter-add), transpose, reshape") {
  Rng rng(26);
  Tensor x = random(Shape{4, 3}, rng);
  const std::vector<std::uint32_t> idx{2, 0, 2, 3, 2};
  check(projected([&idx](Tape&, VarList& v) { return gather_rows(v[0], idx); }, Shape{5, 3}, 1),
        {x});
  const std::vector<std::uint32_t> none;
  check(projected([&none](Tape&, VarList& v) { return gather_rows(v[0], none); }, Shape{0, 3}, 2),
        {x});
  Tensor x4 = random(Shape{3, 2, 2}, rng);  // rows of any trailing shape
  check(projected(
            [](Tape&, VarList& v) {
              return gather_rows(v[0], std::vector<std::uint32_t>{1, 1, 0});
            },
            Shape{3, 2, 2}, 3),
        {x4});
  for (Shape s : kShapes) {
    CAPTURE(s.str());
    Tensor a = random(s, rng);
    check(projected([](Tape&, VarList& v) { return transpose(v[0]); }, Shape{s[1], s[0]}, 4), {a});
    check(projected([](Tape&, VarList& v) { return reshape(v[0], Shape{v[0].shape().size()}); },
                    Shape{s.size()}, 5),
          {a});
  }
  // values
  Tape t;
  Tensor m = Tensor::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(transpose(t.constant(m)).value().to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(gather_rows(t.constant(m), std::vector<std::uint32_t>{1, 0}).value().to_vector() ==
        std::vector<double>{4, 5, 6, 1, 2, 3});
  check_throws_identically<value_error>(
      [](Tape&, VarList& v) {
        return gather_rows(v[0], std::vector<std::uint32_t>{0, 4});
      },
      {Tensor(Shape{4, 2})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return reshape(v[0], Shape{5}); },
                                        {Tensor(Shape{2, 3})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return transpose(v[0]); },
                                        {Tensor(Shape{2, 3, 2})});
}

TEST_CASE("gradient: l2_normalize_rows, including a zero row") {
  Rng rng(27);
  for (Shape s : kShapes) {
    CAPTURE(s.str());
    Tensor a = random(s, rng);
    check(projected([](Tape&, VarList& v) { return l2_normalize_rows(v[0]); }, s, 1), {a});
  }
  Tape t;
  Tensor z = Tensor::from(Shape{2, 2}, {0, 0, 3, 4});
  const auto y = l2_normalize_rows(t.constant(z)).value().to_vector();
  CHECK(y == std::vector<double>{0, 0, 0.6, 0.8});
  // the zero row's gradient is dy / eps: finite
  siam::Parameter<double, siam::Cpu> p("z", Tensor(z));
  Tape t2;
  t2.backward(sum(l2_normalize_rows(t2.param(p), 1e-6)));
  for (double g : p.gradient().to_vector())
    CHECK(std::isfinite(g));
  check_throws_identically<value_error>(
      [](Tape&, VarList& v) { return l2_normalize_rows(v[0], 0.0); }, {Tensor(Shape{2, 2})});
}

TEST_CASE("gradient: pairwise squared distances and cosine similarities") {
  Rng rng(28);
  for (auto [n, m, d] :
       {std::tuple{4, 3, 5}, std::tuple{1, 1, 1}, std::tuple{0, 3, 2}, std::tuple{3, 0, 2}}) {
    CAPTURE(n);
    CAPTURE(m);
    Tensor a = random(Shape{n, d}, rng), b = random(Shape{m, d}, rng);
    check(projected([](Tape&, VarList& v) { return pairwise_sq_distances(v[0], v[1]); },
                    Shape{n, m}, 1),
          {a, b});
    check(projected([](Tape&, VarList& v) { return cosine_similarity_matrix(v[0], v[1]); },
                    Shape{n, m}, 2),
          {a, b});
    // the same set on both sides (the mining losses' case); the diagonal is clamped at 0
    if (n > 1) {
      check(projected(
                [](Tape&, VarList& v) {
                  return pairwise_sq_distances(v[0], v[0]) +
                         pairwise_sq_distances(v[0], v[1]).shape().size() * 0.0;
                },
                Shape{n, n}, 3),
            {a, b}, 1e-5);
    }
  }
  // values against a loop
  Tape t;
  Tensor a = Tensor::from(Shape{2, 2}, {0, 0, 1, 2}),
         b = Tensor::from(Shape{3, 2}, {1, 0, 0, 2, 1, 2});
  const auto dd = pairwise_sq_distances(t.constant(a), t.constant(b)).value().to_vector();
  CHECK(dd == std::vector<double>{1, 4, 5, 4, 1, 0});
  const auto cs = cosine_similarity_matrix(t.constant(b), t.constant(b)).value().to_vector();
  CHECK(cs[0] == doctest::Approx(1));
  CHECK(cs[1] == doctest::Approx(0));
  CHECK(cs[2] == doctest::Approx(1 / std::sqrt(5.0)));
  check_throws_identically<shape_error>(
      [](Tape&, VarList& v) { return pairwise_sq_distances(v[0], v[1]); },
      {Tensor(Shape{2, 3}), Tensor(Shape{2, 2})});
}

TEST_CASE("tape: a node may name up to max_inputs inputs; a forgotten reset() is caught") {
  static_assert(Tape::max_inputs >= 8);
  // an op recording eight inputs gets all eight back in its backward, in order:
  // y = sum_k (k + 1) sum(x_k), so input k's gradient is k + 1 in every element
  Rng rng(29);
  std::vector<Tensor> xs;
  for (int i = 0; i < 8; ++i)
    xs.push_back(random(Shape{2, i + 1}, rng));  // eight shapes: a mixed-up input shows
  auto f = [](Tape& t, VarList& v) {
    Var y = t.make(Shape{1}, true);
    double total = 0;
    for (std::size_t k = 0; k < 8; ++k)
      for (double x : v[k].value().to_vector())
        total += static_cast<double>(k + 1) * x;
    y.value().data()[0] = total;  // the CPU backend: host memory
    t.record(
        +[](Tape& tp, const Tape::Node& n) {
          REQUIRE(n.n_in == 8);
          for (std::uint32_t k = 0; k < n.n_in; ++k)
            tp.accumulate(n.in[k], broadcast_scalar(tp.out_grad(n), tp.shape(n.in[k])) *
                                       static_cast<double>(k + 1));
        },
        y,
        {v[0].id(), v[1].id(), v[2].id(), v[3].id(), v[4].id(), v[5].id(), v[6].id(), v[7].id()});
    return y;
  };
  std::vector<gradcheck::In> ins(xs.begin(), xs.end());
  const auto res = check(f, ins);
  CHECK(res.checked == 2 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8));
  {  // the gradients themselves: k + 1 everywhere in input k
    std::vector<siam::Parameter<double, siam::Cpu>> ps;
    for (auto& x : xs)
      ps.emplace_back("x", Tensor(x));
    Tape t;
    VarList vs;
    for (auto& p : ps)
      vs.push_back(t.param(p));
    t.backward(f(t, vs));
    for (std::size_t k = 0; k < 8; ++k)
      for (double g : ps[k].gradient().to_vector())
        CHECK(g == static_cast<double>(k + 1));
  }

  Tape t;
  t.set_max_nodes(100);
  siam::Parameter<double, siam::Cpu> p("w", Tensor(Shape{2, 2}));
  bool threw = false;
  try {
    for (int step = 0; step < 200; ++step)
      (void)(t.param(p) * 2.0);  // a loop that never calls reset()
  } catch (const value_error& e) {
    threw = true;
    CHECK(std::string(e.what()).find("reset()") != std::string::npos);
  }
  CHECK(threw);
  t.reset();
  for (int step = 0; step < 200; ++step) {  // with reset() the same loop runs forever
    t.reset();
    (void)(t.param(p) * 2.0);
  }
  CHECK(t.node_count() == 1);
}

namespace {
// relu, clamp, maximum/minimum (with a tensor and with a scalar), the fused dense + ReLU
// and the row maximum on rows [NaN, -1, 2, ...]: a NaN input gives a NaN output, as in
// PyTorch, and every number is unchanged.
template <class S>
void check_nan_propagates() {
  using TS = siam::Tensor<S, siam::Cpu>;
  const S nan = std::numeric_limits<S>::quiet_NaN();
  // 37 columns: the vectorised body and its scalar tail both see a NaN.
  const index_t n = 37;
  TS x(Shape{1, n}), other(Shape{1, n});
  for (index_t i = 0; i < n; ++i) {
    x[i] = (i % 3 == 0) ? nan : S(i % 3 == 1 ? -1 : 2);
    other[i] = S(0.5);
  }
  const auto expect = [&](const TS& y, const char* op, auto number) {
    CAPTURE(op);
    for (index_t i = 0; i < n; ++i) {
      CAPTURE(i);
      if (std::isnan(x[i]))
        CHECK(std::isnan(y[i]));
      else
        CHECK(y[i] == number(x[i]));
    }
  };
  expect(TS(relu(x)), "relu", [](S v) { return v > 0 ? v : S(0); });
  expect(TS(clamp(x, S(0), S(1))), "clamp", [](S v) { return std::min(std::max(v, S(0)), S(1)); });
  expect(TS(maximum(x, other)), "maximum(a, b)", [](S v) { return std::max(v, S(0.5)); });
  expect(TS(maximum(other, x)), "maximum(b, a)", [](S v) { return std::max(v, S(0.5)); });
  expect(TS(minimum(x, other)), "minimum(a, b)", [](S v) { return std::min(v, S(0.5)); });
  expect(TS(minimum(other, x)), "minimum(b, a)", [](S v) { return std::min(v, S(0.5)); });
  expect(TS(maximum(x, S(0.5))), "maximum(a, s)", [](S v) { return std::max(v, S(0.5)); });
  expect(TS(minimum(x, S(0.5))), "minimum(a, s)", [](S v) { return std::min(v, S(0.5)); });
  // Dense + ReLU fused: the identity weight and a zero bias give relu(x) again.
  siam::Tape<S, siam::Cpu> t;
  TS w(Shape{n, n}), b(Shape{1, n});
  for (index_t i = 0; i < n; ++i)
    w[i * n + i] = S(1);
  // a NaN in x makes its whole row of x W NaN (0 * NaN is NaN): check one NaN-free row too
  TS rows(Shape{2, n});
  for (index_t i = 0; i < n; ++i) {
    rows[i] = x[i];
    rows[n + i] = S(i % 2 ? -1 : 2);
  }
  const TS h(linear_relu(t.constant(rows), t.constant(w), t.constant(b)).value());
  for (index_t i = 0; i < n; ++i) {
    CHECK(std::isnan(h[i]));
    CHECK(h[n + i] == (i % 2 ? S(0) : S(2)));
  }
  // The row maximum (logsumexp's shift) of a row holding NaN is NaN.
  const TS m(max_cols(rows));
  CHECK(std::isnan(m[0]));
  CHECK(m[1] == S(2));
}
}  // namespace

TEST_CASE("NaN propagates through relu, clamp, maximum, minimum, dense + ReLU, row maximum") {
  check_nan_propagates<float>();
  check_nan_propagates<double>();
}

TEST_CASE("NaN: the gradients of relu and maximum follow the NaN that the forward passed on") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  siam::Parameter<double, siam::Cpu> x("x", Tensor::from(Shape{1, 3}, {nan, -1, 2}));
  siam::Parameter<double, siam::Cpu> o("o", Tensor::from(Shape{1, 3}, {0.5, 0.5, 0.5}));
  Tape t;
  // relu passes dy at a NaN unit (PyTorch's threshold backward does too) and at x > 0.
  t.backward(sum(relu(t.param(x)) * 3.0));
  CHECK(x.gradient().to_vector() == std::vector<double>{3, 0, 3});
  // maximum / minimum route the gradient to the operand they returned, NaN included.
  for (int first = 0; first < 2; ++first) {
    CAPTURE(first);
    x.zero_grad();
    o.zero_grad();
    t.reset();
    auto a = t.param(x), b = t.param(o);
    t.backward(sum(first ? maximum(a, b) : maximum(b, a)));
    CHECK(x.gradient().to_vector() == std::vector<double>{1, 0, 1});
    CHECK(o.gradient().to_vector() == std::vector<double>{0, 1, 0});
    x.zero_grad();
    o.zero_grad();
    t.reset();
    a = t.param(x);
    b = t.param(o);
    t.backward(sum(first ? minimum(a, b) : minimum(b, a)));
    CHECK(x.gradient().to_vector() == std::vector<double>{1, 1, 0});
    CHECK(o.gradient().to_vector() == std::vector<double>{0, 0, 1});
  }
}

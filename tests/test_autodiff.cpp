// Every differentiable op, the contrastive loss and a whole network against central
// differences (gradcheck.hpp), plus the tape's accumulation and scoping rules.
#include "gradcheck.hpp"

using gradcheck::check;
using gradcheck::random;
using gradcheck::Tape;
using gradcheck::Tensor;
using gradcheck::Var;
using siam::Cpu;
using siam::index_t;
using siam::NoGrad;
using siam::Parameter;
using siam::Reduction;
using siam::Rng;
using siam::Shape;
using siam::shape_error;
using siam::value_error;
using VarList = std::vector<Var>;

namespace {
// Non-scalar ops are projected to a scalar by a fixed random tensor.
gradcheck::Fn projected(std::function<Var(Tape&, VarList&)> op, Shape out, std::uint64_t seed) {
  Rng rng(seed);
  auto r = std::make_shared<Tensor>(random(out, rng));
  return [op, r](Tape& t, VarList& v) { return gradcheck::project(t, op(t, v), *r); };
}
}  // namespace

TEST_CASE("gradient: matmul, all transpose combinations, 1x1 and empty") {
  Rng rng(10);
  for (auto [m, n, k] :
       {std::tuple{3, 4, 5}, std::tuple{1, 1, 1}, std::tuple{0, 3, 2}, std::tuple{2, 3, 0}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        CAPTURE(m);
        CAPTURE(ta);
        CAPTURE(tb);
        Tensor a = random(ta ? Shape{k, m} : Shape{m, k}, rng);
        Tensor b = random(tb ? Shape{n, k} : Shape{k, n}, rng);
        auto f = projected([ta, tb](Tape&, VarList& v) { return matmul(v[0], v[1], ta, tb); },
                           Shape{m, n}, 11);
        check(f, {a, b});
      }
}

TEST_CASE("gradient: add, sub, mul, square, sqrt, relu") {
  Rng rng(12);
  for (Shape s : {Shape{1, 1}, Shape{3, 4}, Shape{0, 4}}) {
    CAPTURE(s.str());
    Tensor a = random(s, rng), b = random(s, rng), pos = random(s, rng, 0.5, 2);
    // keep relu inputs away from the kink at 0, where the derivative jumps
    Tensor away = random(s, rng, 0.1, 1);
    for (index_t i = 0; i < away.size(); ++i)
      away[i] *= (i % 2 ? -1 : 1);
    check(projected([](Tape&, VarList& v) { return v[0] + v[1]; }, s, 1), {a, b});
    check(projected([](Tape&, VarList& v) { return v[0] - v[1]; }, s, 2), {a, b});
    check(projected([](Tape&, VarList& v) { return v[0] * v[1]; }, s, 3), {a, b});
    check(projected([](Tape&, VarList& v) { return square(v[0]); }, s, 4), {a});
    check(projected([](Tape&, VarList& v) { return sqrt(v[0]); }, s, 5), {pos});
    check(projected([](Tape&, VarList& v) { return relu(v[0]); }, s, 6), {away});
    // a value used twice accumulates both contributions
    check(projected([](Tape&, VarList& v) { return v[0] * v[0] + v[0]; }, s, 7), {a});
  }
}

TEST_CASE("gradient: add_bias, linear, linear_relu") {
  Rng rng(13);
  for (auto [n, in, out] : {std::tuple{4, 3, 5}, std::tuple{1, 1, 1}, std::tuple{0, 3, 2}}) {
    CAPTURE(n);
    Tensor x = random(Shape{n, in}, rng), w = random(Shape{in, out}, rng);
    Tensor b = random(Shape{out}, rng), z = random(Shape{n, out}, rng);
    check(projected([](Tape&, VarList& v) { return add_bias(v[0], v[1]); }, Shape{n, out}, 1),
          {z, b});
    check(projected([](Tape&, VarList& v) { return linear(v[0], v[1], v[2]); }, Shape{n, out}, 2),
          {x, w, b});
    check(projected([](Tape&, VarList& v) { return linear_relu(v[0], v[1], v[2]); }, Shape{n, out},
                    3),
          {x, w, b});
  }
}

TEST_CASE("gradient: sum, mean, slice_rows, concat_rows") {
  Rng rng(14);
  Tensor a = random(Shape{5, 3}, rng), b = random(Shape{2, 3}, rng);
  check([](Tape&, VarList& v) { return sum(v[0]); }, {a});
  check([](Tape&, VarList& v) { return mean(v[0]); }, {a});
  check(projected([](Tape&, VarList& v) { return slice_rows(v[0], 1, 3); }, Shape{3, 3}, 1), {a});
  // two slices of one tensor: rows outside both get zero, the overlap gets both
  check(projected([](Tape&, VarList& v) { return slice_rows(v[0], 0, 2) * slice_rows(v[0], 1, 2); },
                  Shape{2, 3}, 2),
        {a});
  check(projected([](Tape&, VarList& v) { return concat_rows(v[0], v[1]); }, Shape{7, 3}, 3),
        {a, b});
  check(projected([](Tape&, VarList& v) { return slice_rows(v[0], 0, 0); }, Shape{0, 3}, 4), {a});
  check(projected([](Tape&, VarList& v) { return concat_rows(v[0], slice_rows(v[1], 0, 0)); },
                  Shape{5, 3}, 5),
        {a, b});
}

namespace {
Var contrastive(Tape& t, VarList& v, const Tensor& labels, double margin, Reduction red) {
  return contrastive_loss(v[0], v[1], t.constant(labels), {margin, red});
}
}  // namespace

TEST_CASE("gradient: contrastive loss, both hinge branches, near the margin, d = 0") {
  Rng rng(15);
  const index_t n = 6, d = 3;
  Tensor f1 = random(Shape{n, d}, rng), f2 = random(Shape{n, d}, rng);
  Tensor labels = Tensor::from(Shape{n}, {1, 0, 1, 0, 0, 1});
  for (auto red : {Reduction::sum, Reduction::mean}) {
    // margin 3: every dissimilar pair is inside the margin (hinge active)
    check([&](Tape& t, VarList& v) { return contrastive(t, v, labels, 3.0, red); }, {f1, f2});
    // margin 0.01: every dissimilar pair is beyond it (hinge inactive, zero gradient)
    check([&](Tape& t, VarList& v) { return contrastive(t, v, labels, 0.01, red); }, {f1, f2});
  }
  // d within 1e-3 of the margin on both sides (the hinge is smooth there: max(m-d,0)^2)
  Tensor a = Tensor::from(Shape{2, 1}, {0.0, 0.0}), b = Tensor::from(Shape{2, 1}, {0.299, 0.301});
  Tensor dis = Tensor::from(Shape{2}, {0, 0});
  check([&](Tape& t, VarList& v) { return contrastive(t, v, dis, 0.3, Reduction::sum); }, {a, b});
  // d = 0 exactly (identical features): the 1e-6 guard keeps the gradient finite
  Tensor same = Tensor::from(Shape{2, 2}, {0.5, -0.5, 1.0, 2.0});
  Tensor mixed = Tensor::from(Shape{2}, {1, 0});
  auto r = check([&](Tape& t, VarList& v) { return contrastive(t, v, mixed, 0.3, Reduction::sum); },
                 {same, same}, 1e-4);
  CHECK(std::isfinite(r.max_abs_error));
  // very large activations
  Tensor big1 = random(Shape{n, d}, rng, -1e3, 1e3), big2 = random(Shape{n, d}, rng, -1e3, 1e3);
  check([&](Tape& t, VarList& v) { return contrastive(t, v, labels, 0.3, Reduction::sum); },
        {big1, big2}, 1e-5, 1e-4);
}

TEST_CASE("gradient: the stacked contrastive loss equals the sliced one") {
  Rng rng(17);
  const index_t n = 5, d = 3;
  Tensor f = random(Shape{2 * n, d}, rng);
  Tensor labels = Tensor::from(Shape{n}, {1, 0, 0, 1, 0});
  for (double margin : {0.3, 3.0})
    for (auto red : {Reduction::sum, Reduction::mean}) {
      check(
          [&](Tape& t, VarList& v) {
            return contrastive_loss_stacked(v[0], t.constant(labels), {margin, red});
          },
          {f});
      Tape t1, t2;
      Parameter<double, Cpu> p1("f", Tensor(f)), p2("f", Tensor(f));
      auto l1 = contrastive_loss_stacked(t1.param(p1), t1.constant(labels), {margin, red});
      auto l2 = contrastive_loss(slice_rows(t2.param(p2), 0, n), slice_rows(t2.param(p2), n, n),
                                 t2.constant(labels), {margin, red});
      CHECK(l1.value().item() == doctest::Approx(l2.value().item()).epsilon(1e-14));
      t1.backward(l1);
      t2.backward(l2);
      const auto g1 = p1.gradient().to_vector(), g2 = p2.gradient().to_vector();
      for (std::size_t i = 0; i < g1.size(); ++i)
        CHECK(g1[i] == doctest::Approx(g2[i]).epsilon(1e-12));
    }
  using gradcheck::check_throws_identically;
  check_throws_identically<shape_error>(
      [&](Tape& t, VarList& v) { return contrastive_loss_stacked(v[0], t.constant(labels)); },
      {Tensor(Shape{7, 2})});
  check_throws_identically<shape_error>(
      [&](Tape& t, VarList& v) { return contrastive_loss_stacked(v[0], t.constant(labels)); },
      {Tensor(Shape{8, 2})});
}

namespace {
// The CPU backend without its fused contrastive primitives: the loss is then composed
// from expressions, as on a backend that lacks them.
struct CpuComposed : Cpu {
  static void contrastive_forward() = delete;
  static void contrastive_backward() = delete;
};
static_assert(siam::detail::FusedContrastive<Cpu, double>);
static_assert(!siam::detail::FusedContrastive<CpuComposed, double>);

// Loss and gradients of both forms on backend B: {loss, dF1, dF2, loss, dF (stacked)}.
// Only f1 needs a gradient when `only_first`; f2 is f1 itself when `same`.
template <class B>
std::vector<std::vector<double>> contrastive_on(const Tensor& f, const Tensor& y, double margin,
                                                Reduction red, bool only_first, bool same) {
  using TB = siam::Tensor<double, B>;
  const index_t n = f.rows() / 2;
  TB fb = TB::from(f.shape(), f.to_vector()), yb = TB::from(y.shape(), y.to_vector());
  Parameter<double, B> p1("f1", TB(fb.row_slice(0, n))), p2("f2", TB(fb.row_slice(n, n)));
  Parameter<double, B> ps("f", TB(fb));
  siam::Tape<double, B> t, ts;
  auto v1 = t.param(p1);
  auto v2 = same ? v1 : only_first ? t.constant(p2.value) : t.param(p2);
  auto l = siam::contrastive_loss(v1, v2, t.constant(yb), {margin, red});
  t.backward(l + l);  // an incoming gradient other than 1
  auto ls = siam::contrastive_loss_stacked(ts.param(ps), ts.constant(yb), {margin, red});
  ts.backward(ls);
  std::vector<double> g2 = (same || only_first) ? std::vector<double>{} : p2.gradient().to_vector();
  return {l.value().to_vector(), p1.gradient().to_vector(), g2, ls.value().to_vector(),
          ps.gradient().to_vector()};
}
}  // namespace

TEST_CASE("contrastive loss: the fused CPU primitives equal the composed expressions") {
  Rng rng(18);
  const index_t n = 7, d = 3;
  Tensor f = random(Shape{2 * n, d}, rng, -0.3, 0.3);
  Tensor y = Tensor::from(Shape{n}, {1, 0, 0, 1, 0, 1, 0});
  for (double margin : {0.3, 3.0})
    for (auto red : {Reduction::sum, Reduction::mean})
      for (int variant = 0; variant < 3; ++variant) {
        CAPTURE(margin);
        CAPTURE(variant);
        const auto a = contrastive_on<Cpu>(f, y, margin, red, variant == 1, variant == 2);
        const auto b = contrastive_on<CpuComposed>(f, y, margin, red, variant == 1, variant == 2);
        REQUIRE(a.size() == b.size());
        for (std::size_t k = 0; k < a.size(); ++k) {
          REQUIRE(a[k].size() == b[k].size());
          for (std::size_t i = 0; i < a[k].size(); ++i)
            CHECK(a[k][i] == doctest::Approx(b[k][i]).epsilon(1e-12).scale(1));
        }
        if (variant == 2)  // f and f: the two contributions cancel exactly
          for (double g : a[1])
            CHECK(g == 0.0);
      }
  // empty batches: zero loss, nothing to write
  Tensor none(Shape{0, d}), no_labels(Shape{0});
  const auto e = contrastive_on<Cpu>(none, no_labels, 0.3, Reduction::sum, false, false);
  CHECK(e[0] == std::vector<double>{0.0});
  CHECK(e[1].empty());
}

TEST_CASE("contrastive loss: value by hand, and errors thrown identically") {
  // pair 0 similar with d^2 = 3^2 + 4^2 + 1e-6; pair 1 dissimilar, d = 0.1 < margin 0.3
  Tensor f1 = Tensor::from(Shape{2, 2}, {3, 4, 0, 0}),
         f2 = Tensor::from(Shape{2, 2}, {0, 0, 0.1, 0});
  Tensor y = Tensor::from(Shape{2}, {1, 0});
  Tape t;
  Var l = contrastive_loss(t.constant(f1), t.constant(f2), t.constant(y));
  const double d1 = std::sqrt(0.01 + 1e-6);
  CHECK(l.value().item() == doctest::Approx(0.5 * ((25 + 1e-6) + (0.3 - d1) * (0.3 - d1))));
  using gradcheck::check_throws_identically;
  Tensor bad = Tensor::from(Shape{2}, {1, 2});
  check_throws_identically<value_error>(
      [&](Tape& tp, VarList& v) { return contrastive(tp, v, bad, 0.3, Reduction::sum); }, {f1, f2});
  Tensor three = Tensor::from(Shape{3}, {1, 0, 1});
  check_throws_identically<shape_error>(
      [&](Tape& tp, VarList& v) { return contrastive(tp, v, three, 0.3, Reduction::sum); },
      {f1, f2});
  check_throws_identically<shape_error>(
      [&](Tape& tp, VarList& v) { return contrastive(tp, v, y, 0.3, Reduction::sum); },
      {f1, Tensor(Shape{2, 3})});
  check_throws_identically<value_error>(
      [&](Tape& tp, VarList& v) { return contrastive(tp, v, y, 0.0, Reduction::sum); }, {f1, f2});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return matmul(v[0], v[1]); },
                                        {Tensor(Shape{2, 3}), Tensor(Shape{2, 3})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return v[0] + v[1]; },
                                        {Tensor(Shape{2, 3}), Tensor(Shape{3, 2})});
  check_throws_identically<shape_error>(
      [](Tape&, VarList& v) { return linear(v[0], v[1], v[2]); },
      {Tensor(Shape{2, 3}), Tensor(Shape{3, 4}), Tensor(Shape{5})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return slice_rows(v[0], 2, 2); },
                                        {Tensor(Shape{3, 3})});
}

TEST_CASE("gradient: a whole Dense-ReLU-Dense network through a Siamese loss") {
  Rng rng(16);
  const index_t n = 4;
  Tensor x = random(Shape{2 * n, 5}, rng);
  Tensor w1 = random(Shape{5, 6}, rng), b1 = random(Shape{6}, rng, -0.1, 0.1);
  Tensor w2 = random(Shape{6, 2}, rng), b2 = random(Shape{2}, rng);
  Tensor y = Tensor::from(Shape{n}, {1, 0, 0, 1});
  // inputs: x (differentiated too), W1, b1, W2, b2; both branches share the weights
  auto f = [&](Tape& t, VarList& v) {
    Var h = linear_relu(v[0], v[1], v[2]);
    Var o = linear(h, v[3], v[4]);
    return contrastive_loss(slice_rows(o, 0, n), slice_rows(o, n, n), t.constant(y), {1.0});
  };
  auto r = check(f, {x, w1, b1, w2, b2});
  CHECK(r.checked ==
        static_cast<std::size_t>(x.size() + w1.size() + b1.size() + w2.size() + b2.size()));
  // the same network composed with separate ops gives the same loss
  auto g = [&](Tape& t, VarList& v) {
    Var h = relu(add_bias(matmul(v[0], v[1]), v[2]));
    Var o = add_bias(matmul(h, v[3]), v[4]);
    return contrastive_loss(slice_rows(o, 0, n), slice_rows(o, n, n), t.constant(y), {1.0});
  };
  check(g, {x, w1, b1, w2, b2});
}

TEST_CASE("tape: accumulation across branches, zero_grad, NoGrad, reset reuses buffers") {
  Parameter<double, Cpu> w("w", Tensor::from(Shape{2, 1}, {1.0, -2.0}));
  Tensor a = Tensor::from(Shape{1, 2}, {3.0, 4.0}), b = Tensor::from(Shape{1, 2}, {5.0, 6.0});
  Tape t;
  // L = a w + b w: dL/dw = a^T + b^T (one weight used by two branches)
  Var l = matmul(t.constant(a), t.param(w)) + matmul(t.constant(b), t.param(w));
  t.backward(l);
  CHECK(w.gradient().to_vector() == std::vector<double>{8.0, 10.0});
  // a second backward without zero_grad accumulates
  t.reset();
  Var l2 = matmul(t.constant(a), t.param(w));
  t.backward(l2);
  CHECK(w.gradient().to_vector() == std::vector<double>{11.0, 14.0});
  w.zero_grad();
  CHECK(w.gradient().to_vector() == std::vector<double>{0.0, 0.0});
  // NoGrad records nothing
  t.reset();
  {
    NoGrad ng(t);
    Var y = matmul(t.constant(a), t.param(w));
    CHECK(t.node_count() == 0);
    CHECK_FALSE(y.requires_grad());
    CHECK_THROWS_AS(t.backward(y), value_error);
  }
  CHECK(t.recording());
  // the same graph again reuses every slot buffer
  t.reset();
  Var l3 = matmul(t.constant(a), t.param(w));
  const double* p = l3.value().data();
  t.reset();
  Var l4 = matmul(t.constant(a), t.param(w));
  CHECK(l4.value().data() == p);
  CHECK_THROWS_AS(t.backward(relu(matmul(t.param(w), t.constant(a)))), shape_error);
}

// Convolutional ops and layers: conv2d, max_pool2d, flatten/reshape, Conv2D, MaxPool2D,
// Flatten and the LeNet builder. Gradients against central differences (double), values
// against direct loops, engines against each other, and a steady-state LeNet Siamese
// training step that must not allocate.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <siam/autodiff/conv.hpp>
#include <siam/io/model_file.hpp>
#include <siam/nn/conv.hpp>
#include <siam/nn/resnet.hpp>
#include <siam/siamese.hpp>
#include <string>
#include <vector>

#if defined(SIAM_TEST_DNNL)
#include <siam/backend/conv_dnnl.hpp>
#endif

#include "gradcheck.hpp"
#include "support/alloc_counter.hpp"

using namespace siam;
using gradcheck::random;
using Td = Tensor<double, Cpu>;
using Tf = Tensor<float, Cpu>;

namespace {

// y[n,o,p,q] = b[o] + sum_{c,i,j} w[o,c,i,j] x[n,c,p s - pad + i, q s - pad + j], by the book.
template <class T>
std::vector<double> naive_conv(const Tensor<T, Cpu>& x, const Tensor<T, Cpu>& w, const T* b,
                               index_t s, index_t pad) {
  const Shape sx = x.shape(), sw = w.shape();
  const index_t N = sx[0], C = sx[1], H = sx[2], W = sx[3], O = sw[0], KH = sw[2], KW = sw[3];
  const index_t OH = (H + 2 * pad - KH) / s + 1, OW = (W + 2 * pad - KW) / s + 1;
  std::vector<double> y(static_cast<std::size_t>(N * O * OH * OW));
  for (index_t n = 0; n < N; ++n)
    for (index_t o = 0; o < O; ++o)
      for (index_t p = 0; p < OH; ++p)
        for (index_t q = 0; q < OW; ++q) {
          double acc = b ? b[o] : 0.0;
          for (index_t c = 0; c < C; ++c)
            for (index_t i = 0; i < KH; ++i)
              for (index_t j = 0; j < KW; ++j) {
                const index_t u = p * s - pad + i, v = q * s - pad + j;
                if (u < 0 || u >= H || v < 0 || v >= W) continue;
                acc += double(w[((o * C + c) * KH + i) * KW + j]) *
                       double(x[((n * C + c) * H + u) * W + v]);
              }
          y[static_cast<std::size_t>(((n * O + o) * OH + p) * OW + q)] = acc;
        }
  return y;
}

struct Geo {
  Shape x, w;
  index_t stride, pad;
};
Tf random_f(Shape s, Rng& rng, double lo = -1, double hi = 1) {
  std::vector<float> v(static_cast<std::size_t>(s.size()));
  for (auto& e : v)
    e = static_cast<float>(rng.uniform(lo, hi));
  return Tf::from(s, std::span<const float>(v));
}

// Values and all three gradients of one float convolution on the active engine.
struct ConvRun {
  std::vector<float> y, dx, dw, db;
};
ConvRun run_conv(const Tf& x, const Tf& w, const Tf& b, const Tf& r, index_t s, index_t p) {
  Parameter<float, Cpu> px("x", Tf(x)), pw("w", Tf(w)), pb("b", Tf(b));
  Tape<float, Cpu> t;
  auto y = conv2d(t.param(px), t.param(pw), t.param(pb), s, p);
  t.backward(sum(y * t.constant(r)));
  return {y.value().to_vector(), px.gradient().to_vector(), pw.gradient().to_vector(),
          pb.gradient().to_vector()};
}
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1e-30, diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(double(a[i])));
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
  }
  return diff / scale;
}

const std::vector<Geo> geometries = {
    {Shape{2, 3, 6, 5}, Shape{4, 3, 3, 3}, 1, 0},   // plain
    {Shape{2, 3, 7, 7}, Shape{2, 3, 3, 2}, 2, 1},   // stride 2, padding, non-square kernel
    {Shape{3, 2, 4, 4}, Shape{3, 2, 1, 1}, 1, 0},   // 1 x 1 kernel
    {Shape{1, 1, 1, 1}, Shape{1, 1, 1, 1}, 1, 0},   // 1 x 1 everything
    {Shape{1, 2, 3, 3}, Shape{2, 2, 3, 3}, 1, 2},   // padding wider than half the kernel
    {Shape{2, 1, 5, 5}, Shape{3, 1, 5, 5}, 3, 0},   // kernel = input
    {Shape{2, 2, 4, 13}, Shape{3, 2, 2, 3}, 1, 0},  // rows of 11: a block of 8 and a tail
};

}  // namespace

TEST_CASE("conv2d matches a direct loop (double, every geometry, with and without bias)") {
  Rng rng(1);
  for (const auto& g : geometries) {
    CAPTURE(g.x.str());
    CAPTURE(g.w.str());
    Td x = random(g.x, rng), w = random(g.w, rng), b = random(Shape{g.w[0]}, rng);
    Tape<double, Cpu> t;
    auto y = conv2d(t.constant(x), t.constant(w), t.constant(b), g.stride, g.pad).value();
    auto y0 = conv2d(t.constant(x), t.constant(w), g.stride, g.pad).value();
    const auto ref = naive_conv(x, w, b.data(), g.stride, g.pad);
    const auto ref0 = naive_conv(x, w, static_cast<const double*>(nullptr), g.stride, g.pad);
    REQUIRE(y.size() == static_cast<index_t>(ref.size()));
    for (std::size_t i = 0; i < ref.size(); ++i) {
      CHECK(y.data()[i] == doctest::Approx(ref[i]).epsilon(1e-12));
      CHECK(y0.data()[i] == doctest::Approx(ref0[i]).epsilon(1e-12));
    }
  }
}

TEST_CASE("conv2d gradients: x, w and b against central differences") {
  Rng rng(2);
  for (const auto& g : geometries) {
    CAPTURE(g.x.str());
    CAPTURE(g.w.str());
    const Shape ys{g.x[0], g.w[0], (g.x[2] + 2 * g.pad - g.w[2]) / g.stride + 1,
                   (g.x[3] + 2 * g.pad - g.w[3]) / g.stride + 1};
    const Td r = random(ys, rng);
    const index_t s = g.stride, p = g.pad;
    auto res = gradcheck::check(
        [&](auto& t, auto& v) { return gradcheck::project(t, conv2d(v[0], v[1], v[2], s, p), r); },
        {random(g.x, rng), random(g.w, rng), random(Shape{g.w[0]}, rng)});
    CHECK(res.checked == static_cast<std::size_t>(g.x.size() + g.w.size() + g.w[0]));
    gradcheck::check(
        [&](auto& t, auto& v) { return gradcheck::project(t, conv2d(v[0], v[1], s, p), r); },
        {random(g.x, rng), random(g.w, rng)});
  }
}

// Batches that the im2col engine cuts into several GEMM groups per chunk (8 chunks; a group
// holds max(1, 128 / output pixels) images), so the weight gradient must accumulate across
// groups: 64 pixels (groups of 2, 3 images a chunk), 16 pixels strided and padded (groups of
// 8, 9 images a chunk), 144 pixels (groups of 1, up to 2 images a chunk).
namespace {
const std::vector<Geo> multi_group = {
    {Shape{24, 1, 10, 10}, Shape{2, 1, 3, 3}, 1, 0},
    {Shape{72, 1, 7, 7}, Shape{2, 1, 3, 3}, 2, 1},
    {Shape{9, 2, 13, 13}, Shape{2, 2, 2, 2}, 1, 0},
};
}  // namespace

TEST_CASE(
    "conv2d gradients of batches spanning several image groups, against central differences") {
  Rng rng(13);
  for (const auto& g : multi_group) {
    CAPTURE(g.x.str());
    const index_t s = g.stride, p = g.pad;
    const index_t oh = (g.x[2] + 2 * p - g.w[2]) / s + 1, ow = (g.x[3] + 2 * p - g.w[3]) / s + 1;
    const Td r = random(Shape{g.x[0], g.w[0], oh, ow}, rng);
    const Td x = random(g.x, rng), w = random(g.w, rng), b = random(Shape{g.w[0]}, rng);
    // double, im2col, through the library's checker: w and b (x a constant, so that each
    // central difference costs one convolution of the whole batch, not one per pixel)
    auto res = gradcheck::check(
        [&](auto& t, auto& v) {
          return gradcheck::project(t, conv2d(t.constant(x), v[0], v[1], s, p), r);
        },
        {w, b});
    CHECK(res.checked == static_cast<std::size_t>(g.w.size() + g.w[0]));

    // Every gradient (x too) against central differences of the direct loop in double:
    // L = sum(conv(x, w, b) * r) is linear in each input, so a step of 1 is exact up to
    // round-off.
    auto loss = [&](const Td& xx, const Td& ww, const Td& bb) {
      const auto y = naive_conv(xx, ww, bb.data(), s, p);
      double l = 0;
      for (std::size_t i = 0; i < y.size(); ++i)
        l += y[i] * r[static_cast<index_t>(i)];
      return l;
    };
    Td xs(x), ws(w), bs(b);
    auto numeric = [&](Td& in) {
      std::vector<double> d(static_cast<std::size_t>(in.size()));
      for (index_t i = 0; i < in.size(); ++i) {
        const double v0 = in[i];
        in[i] = v0 + 0.5;
        const double lp = loss(xs, ws, bs);
        in[i] = v0 - 0.5;
        const double lm = loss(xs, ws, bs);
        in[i] = v0;
        d[static_cast<std::size_t>(i)] = lp - lm;
      }
      return d;
    };
    const std::vector<double> ndx = numeric(xs), ndw = numeric(ws), ndb = numeric(bs);
    auto max_rel = [](const std::vector<double>& want, const auto& got) {
      REQUIRE(want.size() == got.size());
      double scale = 1e-30, diff = 0;
      for (std::size_t i = 0; i < want.size(); ++i) {
        scale = std::max(scale, std::abs(want[i]));
        diff = std::max(diff, std::abs(want[i] - double(got[i])));
      }
      return diff / scale;
    };
    {  // double, im2col: round-off only
      Parameter<double, Cpu> px("x", Td(x)), pw("w", Td(w)), pb("b", Td(b));
      Tape<double, Cpu> t;
      t.backward(gradcheck::project(t, conv2d(t.param(px), t.param(pw), t.param(pb), s, p), r));
      CHECK(max_rel(ndx, px.gradient().to_vector()) < 1e-12);
      CHECK(max_rel(ndw, pw.gradient().to_vector()) < 1e-12);
      CHECK(max_rel(ndb, pb.gradient().to_vector()) < 1e-12);
    }
    // float, every engine built in: float sums of at most a few hundred terms
    auto to_f = [](const Td& t) {
      std::vector<float> v(static_cast<std::size_t>(t.size()));
      for (index_t i = 0; i < t.size(); ++i)
        v[static_cast<std::size_t>(i)] = static_cast<float>(t[i]);
      return Tf::from(t.shape(), std::span<const float>(v));
    };
    std::vector<ConvEngine> engines{ConvEngine::im2col};
#if defined(SIAM_TEST_DNNL)
    engines.push_back(ConvEngine::onednn);
#endif
    for (ConvEngine e : engines) {
      CAPTURE(static_cast<int>(e));
      set_conv_engine(e);
      const ConvRun f = run_conv(to_f(x), to_f(w), to_f(b), to_f(r), s, p);
      set_conv_engine(ConvEngine::im2col);
      CHECK(max_rel(ndx, f.dx) < 1e-5);
      CHECK(max_rel(ndw, f.dw) < 1e-5);
      CHECK(max_rel(ndb, f.db) < 1e-5);
    }
  }
}

TEST_CASE("conv2d: an input used twice accumulates, and a constant input gets no gradient") {
  Rng rng(3);
  const Td r = random(Shape{2, 2, 3, 3}, rng);
  // The same x through two convolutions (as a Siamese pair shares weights): both add.
  gradcheck::check(
      [&](auto& t, auto& v) {
        return gradcheck::project(t, conv2d(v[0], v[1], v[2]) + conv2d(v[0], v[3], v[2]), r);
      },
      {random(Shape{2, 3, 5, 5}, rng), random(Shape{2, 3, 3, 3}, rng), random(Shape{2}, rng),
       random(Shape{2, 3, 3, 3}, rng)});
  Tape<double, Cpu> t;
  Parameter<double, Cpu> w("w", random(Shape{2, 3, 3, 3}, rng));
  Td x = random(Shape{2, 3, 5, 5}, rng);
  auto xv = t.constant(x);
  auto loss = gradcheck::project(t, conv2d(xv, t.param(w)), r);
  t.backward(loss);
  CHECK_THROWS_AS(xv.grad(), value_error);
}

TEST_CASE("conv2d on an empty batch: empty output, zero weight and bias gradients") {
  Rng rng(4);
  const Td r(Shape{0, 2, 3, 3});
  auto res = gradcheck::check(
      [&](auto& t, auto& v) { return gradcheck::project(t, conv2d(v[0], v[1], v[2]), r); },
      {Td(Shape{0, 3, 5, 5}), random(Shape{2, 3, 3, 3}, rng), random(Shape{2}, rng)});
  CHECK(res.checked == 2 * 27 + 2);
  Tape<double, Cpu> t;
  Parameter<double, Cpu> w("w", random(Shape{2, 3, 3, 3}, rng)), b("b", random(Shape{2}, rng));
  Td x(Shape{0, 3, 5, 5});
  auto y = conv2d(t.constant(x), t.param(w), t.param(b));
  CHECK(y.shape() == Shape{0, 2, 3, 3});
  t.backward(sum(y + t.constant(r)));
  for (double v : w.gradient().to_vector())
    CHECK(v == 0.0);
  for (double v : b.gradient().to_vector())
    CHECK(v == 0.0);
}

TEST_CASE(
    "conv2d shape errors are typed, name the shapes, and are thrown with and without a tape") {
  Rng rng(5);
  using gradcheck::check_throws_identically;
  auto conv = [](index_t s, index_t p) {
    return [=](auto&, auto& v) { return conv2d(v[0], v[1], v[2], s, p); };
  };
  check_throws_identically<shape_error>(  // 3 channels expected, 1 given
      conv(1, 0),
      {random(Shape{2, 1, 28, 28}, rng), random(Shape{4, 3, 5, 5}, rng), random(Shape{4}, rng)});
  check_throws_identically<shape_error>(  // kernel larger than the padded input
      conv(1, 1),
      {random(Shape{1, 1, 3, 3}, rng), random(Shape{1, 1, 6, 6}, rng), random(Shape{1}, rng)});
  check_throws_identically<shape_error>(  // bias of the wrong length
      conv(1, 0),
      {random(Shape{1, 1, 3, 3}, rng), random(Shape{2, 1, 2, 2}, rng), random(Shape{3}, rng)});
  check_throws_identically<shape_error>(  // input of rank 2
      conv(1, 0),
      {random(Shape{1, 9}, rng), random(Shape{2, 1, 2, 2}, rng), random(Shape{2}, rng)});
  check_throws_identically<shape_error>(  // stride 0
      conv(0, 0),
      {random(Shape{1, 1, 3, 3}, rng), random(Shape{2, 1, 2, 2}, rng), random(Shape{2}, rng)});
  check_throws_identically<shape_error>(  // negative padding
      conv(1, -1),
      {random(Shape{1, 1, 3, 3}, rng), random(Shape{2, 1, 2, 2}, rng), random(Shape{2}, rng)});
  Tape<double, Cpu> t;
  Td x = random(Shape{2, 1, 28, 28}, rng), w = random(Shape{4, 3, 5, 5}, rng);
  try {
    (void)conv2d(t.constant(x), t.constant(w));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("[2 x 1 x 28 x 28]") != std::string::npos);
    CHECK(m.find("[4 x 3 x 5 x 5]") != std::string::npos);
    CHECK(m.find("3 input channels") != std::string::npos);
  }
}

TEST_CASE("max_pool2d: values, gradients, overlapping windows, and ties to the first index") {
  Rng rng(6);
  struct P {
    Shape x;
    index_t k, s;
  };
  for (const P& p : {P{Shape{2, 3, 4, 4}, 2, 2}, P{Shape{1, 2, 5, 7}, 3, 2},
                     P{Shape{1, 1, 1, 1}, 1, 1}, P{Shape{2, 1, 5, 5}, 2, 3}}) {
    CAPTURE(p.x.str());
    // Distinct values: central differences are well defined away from ties.
    Td x(p.x);
    std::vector<double> vals(static_cast<std::size_t>(p.x.size()));
    for (std::size_t i = 0; i < vals.size(); ++i)
      vals[i] = 0.01 * double(i) + rng.uniform(0, 0.001);
    for (std::size_t i = vals.size(); i > 1; --i)
      std::swap(vals[i - 1], vals[static_cast<std::size_t>(rng.uniform(0, double(i))) % i]);
    for (index_t i = 0; i < x.size(); ++i)
      x[i] = vals[static_cast<std::size_t>(i)];
    Tape<double, Cpu> t;
    auto y = max_pool2d(t.constant(x), p.k, p.s).value();
    const index_t H = p.x[2], W = p.x[3], OH = (H - p.k) / p.s + 1, OW = (W - p.k) / p.s + 1;
    REQUIRE(y.shape() == Shape{p.x[0], p.x[1], OH, OW});
    for (index_t pl = 0; pl < p.x[0] * p.x[1]; ++pl)
      for (index_t a = 0; a < OH; ++a)
        for (index_t b = 0; b < OW; ++b) {
          double m = -1e300;
          for (index_t i = 0; i < p.k; ++i)
            for (index_t j = 0; j < p.k; ++j)
              m = std::max(m, x[pl * H * W + (a * p.s + i) * W + b * p.s + j]);
          CHECK(y.data()[(pl * OH + a) * OW + b] == m);
        }
    const Td r = random(y.shape(), rng);
    gradcheck::check(
        [&](auto& tp, auto& v) { return gradcheck::project(tp, max_pool2d(v[0], p.k, p.s), r); },
        {x});
  }
  // Ties: a constant plane routes each window's gradient to its first (top-left) element.
  Tape<double, Cpu> t;
  Parameter<double, Cpu> x("x", Td(Shape{1, 1, 4, 4}));
  x.value.fill(1.0);
  auto y = max_pool2d(t.param(x), 2, 2);
  t.backward(sum(y));
  const auto g = x.gradient().to_vector();
  for (index_t i = 0; i < 16; ++i) {
    const bool first = (i / 4) % 2 == 0 && (i % 4) % 2 == 0;
    CHECK(g[static_cast<std::size_t>(i)] == (first ? 1.0 : 0.0));
  }
  // Overlapping windows (kernel 3, stride 1) that share a maximum add up there.
  Parameter<double, Cpu> z("z", Td(Shape{1, 1, 4, 4}));
  z.value[5] = 10;  // inside all four 3 x 3 windows
  t.reset();
  z.zero_grad();
  t.backward(sum(max_pool2d(t.param(z), 3, 1)));
  CHECK(z.gradient()[5] == 4.0);
}

namespace {
// A NaN in a window is the window's result and takes its gradient (PyTorch's max-pool
// propagates NaN); windows without one are unchanged.
template <class S>
void check_pool_nan() {
  const S nan = std::numeric_limits<S>::quiet_NaN();
  Tape<S, Cpu> t;
  Parameter<S, Cpu> x("x", Tensor<S, Cpu>(Shape{1, 1, 4, 4}));
  for (index_t i = 0; i < 16; ++i)
    x.value[i] = S(i);
  x.value[5] = nan;   // window (0, 0): not its first position, and below the window's max 5
  x.value[10] = nan;  // window (1, 1): its first position, above the numbers before it
  auto y = max_pool2d(t.param(x), 2, 2);
  const auto v = y.value().to_vector();
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == S(7));
  CHECK(v[2] == S(13));
  CHECK(std::isnan(v[3]));
  t.backward(sum(y));
  const auto g = x.gradient().to_vector();
  for (index_t i = 0; i < 16; ++i) {
    CAPTURE(i);
    CHECK(g[static_cast<std::size_t>(i)] ==
          ((i == 5 || i == 7 || i == 13 || i == 10) ? S(1) : S(0)));
  }
}
}  // namespace

TEST_CASE("max_pool2d: a NaN in a window is its result and takes the gradient") {
  check_pool_nan<float>();
  check_pool_nan<double>();
}

TEST_CASE("max_pool2d: empty batch, shape errors") {
  Rng rng(7);
  const Td r(Shape{0, 2, 2, 2});
  auto res = gradcheck::check(
      [&](auto& t, auto& v) { return gradcheck::project(t, max_pool2d(v[0], 2, 2), r); },
      {Td(Shape{0, 2, 4, 4})});
  CHECK(res.checked == 0);
  auto pool = [](index_t k, index_t s) {
    return [=](auto&, auto& v) { return max_pool2d(v[0], k, s); };
  };
  gradcheck::check_throws_identically<shape_error>(pool(5, 1), {random(Shape{1, 1, 4, 4}, rng)});
  gradcheck::check_throws_identically<shape_error>(pool(2, 0), {random(Shape{1, 1, 4, 4}, rng)});
  gradcheck::check_throws_identically<shape_error>(pool(2, 2), {random(Shape{4, 4}, rng)});
}

TEST_CASE("flatten and reshape: views with the same memory, gradients pass through") {
  Rng rng(8);
  Td x = random(Shape{2, 3, 2, 2}, rng);
  Tape<double, Cpu> t;
  auto xv = t.constant(x);
  auto f = flatten(xv);
  CHECK(f.shape() == Shape{2, 12});
  CHECK(f.value().data() == x.data());
  const Td r = random(Shape{2, 12}, rng);
  gradcheck::check([&](auto& tp, auto& v) { return gradcheck::project(tp, flatten(v[0]), r); },
                   {x});
  gradcheck::check(
      [&](auto& tp, auto& v) {
        return gradcheck::project(tp, flatten(reshape(v[0], Shape{2, 3, 4, 1})), r);
      },
      {random(Shape{2, 12}, rng)});
  gradcheck::check_throws_identically<shape_error>([](auto&, auto& v) { return flatten(v[0]); },
                                                   {random(Shape{5}, rng)});
  gradcheck::check_throws_identically<shape_error>(
      [](auto&, auto& v) {
        return reshape(v[0], Shape{2, 5});
      },
      {random(Shape{2, 12}, rng)});
}

TEST_CASE("a small CNN (conv, relu, pool, flatten, dense) end to end against central differences") {
  Rng rng(9);
  const Td r = random(Shape{2, 3}, rng);
  gradcheck::check(
      [&](auto& t, auto& v) {
        auto h = max_pool2d(relu(conv2d(v[0], v[1], v[2], 1, 1)), 2, 2);  // [2 x 2 x 3 x 3]
        return gradcheck::project(t, linear(flatten(h), v[3], v[4]), r);
      },
      {random(Shape{2, 1, 6, 6}, rng), random(Shape{2, 1, 3, 3}, rng), random(Shape{2}, rng),
       random(Shape{18, 3}, rng), random(Shape{3}, rng)});
}

TEST_CASE("the im2col engine gives bit-identical results on 1, 2 and 3 threads") {
  Rng rng(10);
  const Tf x = random_f(Shape{37, 20, 12, 12}, rng), w = random_f(Shape{50, 20, 5, 5}, rng),
           b = random_f(Shape{50}, rng), r = random_f(Shape{37, 50, 8, 8}, rng);
  const int before = num_threads();
  set_num_threads(1);
  const ConvRun one = run_conv(x, w, b, r, 1, 0);
  for (int n : {2, 3}) {
    set_num_threads(n);
    const ConvRun many = run_conv(x, w, b, r, 1, 0);
    CHECK(many.y == one.y);
    CHECK(many.dx == one.dx);
    CHECK(many.dw == one.dw);
    CHECK(many.db == one.db);
  }
  set_num_threads(before);
}

TEST_CASE("engines: im2col in float agrees with the double reference; oneDNN with im2col") {
  Rng rng(11);
  struct L {
    Shape x, w;
    index_t s, p;
  };
  // LeNet's two convolutions (a small batch) and a strided, padded one; then ResNet's
  // shapes, where oneDNN picks channel-blocked layouts (nChw16c on AVX-512, nChw8c on AVX2):
  // 3x3 padded, 49 positions (not a whole number of 16-position tiles), 20 output channels
  // (a last block of 4), the strided 1x1 projection.
  for (const L& l : {L{Shape{6, 1, 28, 28}, Shape{20, 1, 5, 5}, 1, 0},
                     L{Shape{6, 20, 12, 12}, Shape{50, 20, 5, 5}, 1, 0},
                     L{Shape{3, 4, 9, 9}, Shape{8, 4, 3, 3}, 2, 1},
                     L{Shape{3, 32, 7, 7}, Shape{32, 32, 3, 3}, 1, 1},
                     L{Shape{2, 16, 9, 9}, Shape{20, 16, 3, 3}, 1, 1},
                     L{Shape{2, 32, 8, 8}, Shape{64, 32, 1, 1}, 2, 0}}) {
    CAPTURE(l.x.str());
    const Tf x = random_f(l.x, rng), w = random_f(l.w, rng), b = random_f(Shape{l.w[0]}, rng);
    const index_t oh = (l.x[2] + 2 * l.p - l.w[2]) / l.s + 1;
    const Tf r = random_f(Shape{l.x[0], l.w[0], oh, oh}, rng);
    set_conv_engine(ConvEngine::im2col);
    const ConvRun a = run_conv(x, w, b, r, l.s, l.p);
    // Float against the double-precision result: within float round-off of a sum of
    // C*KH*KW terms (relative to the largest value).
    Td xd(l.x), wd(l.w), bd(Shape{l.w[0]});
    for (index_t i = 0; i < x.size(); ++i)
      xd[i] = x[i];
    for (index_t i = 0; i < w.size(); ++i)
      wd[i] = w[i];
    for (index_t i = 0; i < b.size(); ++i)
      bd[i] = b[i];
    const auto ref = naive_conv(xd, wd, bd.data(), l.s, l.p);
    CHECK(max_rel_diff(a.y, std::vector<float>(ref.begin(), ref.end())) < 1e-5);
#if defined(SIAM_TEST_DNNL)
    set_conv_engine(ConvEngine::onednn);
    const ConvRun d = run_conv(x, w, b, r, l.s, l.p);
    set_conv_engine(ConvEngine::im2col);
    // Both are FP32 with different summation orders: agreement within 1e-5 of the
    // largest magnitude of each output.
    CHECK(max_rel_diff(a.y, d.y) < 1e-5);
    CHECK(max_rel_diff(a.dx, d.dx) < 1e-5);
    CHECK(max_rel_diff(a.dw, d.dw) < 1e-5);
    CHECK(max_rel_diff(a.db, d.db) < 1e-5);
#endif
  }
#if defined(SIAM_TEST_DNNL)
  {  // an input read by two convolutions (a residual block's input): its blocked dx is added
     // by oneDNN's copy-out; the sum against im2col's
    const Tf x = random_f(Shape{3, 32, 7, 7}, rng), w1 = random_f(Shape{32, 32, 3, 3}, rng),
             w2 = random_f(Shape{32, 32, 3, 3}, rng), r = random_f(Shape{3, 32, 7, 7}, rng);
    std::vector<float> dx[2];
    for (int k = 0; k < 2; ++k) {
      set_conv_engine(k ? ConvEngine::onednn : ConvEngine::im2col);
      Parameter<float, Cpu> px("x", Tf(x));
      Tape<float, Cpu> t;
      auto xv = t.param(px);
      auto y = conv2d(xv, t.constant(w1), 1, 1) + conv2d(xv, t.constant(w2), 1, 1);
      t.backward(sum(y * t.constant(r)));
      dx[k] = px.gradient().to_vector();
    }
    set_conv_engine(ConvEngine::im2col);
    CHECK(max_rel_diff(dx[0], dx[1]) < 1e-5);
  }
  MESSAGE("oneDNN engine compared with im2col");
#else
  MESSAGE("oneDNN not built in (SIAM_DNNL=OFF or not found): engine agreement skipped");
  CHECK_THROWS_AS(set_conv_engine(ConvEngine::onednn), value_error);
#endif
}

TEST_CASE("oneDNN: channel-blocked conv2d is NCHW's bit for bit; Conv2D keeps it in training") {
#if defined(SIAM_TEST_DNNL)
  set_conv_engine(ConvEngine::onednn);
  const index_t k = conv_block<float, Cpu>();
  if (k == 0) {
    set_conv_engine(ConvEngine::im2col);
    MESSAGE("oneDNN keeps plain layouts on this CPU: channel-blocked tensors skipped");
    return;
  }
  CHECK((k == 8 || k == 16));
  CHECK(conv_block<double, Cpu>() == 0);
  Rng rng(17);
  struct L {
    Shape x, w;
    index_t s, p;
    bool in_blocked, out_blocked;
  };
  // A ResNet's convolutions: the stem (one input channel, NCHW in), 3x3 in the blocked
  // layout both ways, strided, the 1x1 projection, a blocked input to an NCHW output, 49
  // positions (not a whole number of tiles).
  for (const L& l : {L{Shape{2, 1, 8, 8}, Shape{2 * k, 1, 3, 3}, 1, 1, false, true},
                     L{Shape{2, k, 7, 7}, Shape{2 * k, k, 3, 3}, 1, 1, true, true},
                     L{Shape{3, 2 * k, 9, 9}, Shape{k, 2 * k, 3, 3}, 2, 1, true, true},
                     L{Shape{2, k, 8, 8}, Shape{2 * k, k, 1, 1}, 2, 0, true, true},
                     L{Shape{2, k, 6, 6}, Shape{5, k, 3, 3}, 1, 1, true, false}}) {
    CAPTURE(l.x.str());
    CAPTURE(l.w.str());
    const Tf x = random_f(l.x, rng), w = random_f(l.w, rng), b = random_f(Shape{l.w[0]}, rng);
    const index_t oh = (l.x[2] + 2 * l.p - l.w[2]) / l.s + 1;
    const Tf r = random_f(Shape{l.x[0], l.w[0], oh, oh}, rng);
    ConvRun runs[2];
    for (int blocked = 0; blocked < 2; ++blocked) {
      Parameter<float, Cpu> px("x", Tf(x)), pw("w", Tf(w)), pb("b", Tf(b));
      Tape<float, Cpu> t;
      auto xv = t.param(px);
      // x twice: the blocked input's gradient accumulates.
      if (blocked && l.in_blocked) xv = to_blocked(xv, k) * 0.5f + to_blocked(xv, k) * 0.5f;
      auto y = conv2d(xv, t.param(pw), t.param(pb), l.s, l.p, blocked && l.out_blocked ? k : 0);
      if (blocked && l.out_blocked) {
        CHECK(y.shape() == Shape{l.x[0], l.w[0] / k, oh, oh, k});
        y = from_blocked(y);
      }
      t.backward(sum(y * t.constant(r)));
      runs[blocked] = {y.value().to_vector(), px.gradient().to_vector(), pw.gradient().to_vector(),
                       pb.gradient().to_vector()};
    }
    // The same kernels on the same layout: the same bits (x * 0.5 + x * 0.5 is x exactly).
    CHECK(runs[1].y == runs[0].y);
    CHECK(runs[1].dw == runs[0].dw);
    CHECK(runs[1].db == runs[0].db);
    CHECK(max_rel_diff(runs[0].dx, runs[1].dx) == 0.0);
  }
  {  // errors: output channels not a whole number of blocks; a blocked tensor on im2col
    Tape<float, Cpu> t;
    const Tf x = random_f(Shape{2, k, 5, 5}, rng);
    const Tf w_odd = random_f(Shape{k + 1, k, 3, 3}, rng), w = random_f(Shape{k, k, 3, 3}, rng);
    CHECK_THROWS_AS((void)conv2d(t.constant(x), t.constant(w_odd), 1, 1, k), shape_error);
    const auto xb = to_blocked(t.constant(x), k);
    set_conv_engine(ConvEngine::im2col);
    CHECK(conv_block<float, Cpu>() == 0);
    CHECK_THROWS_AS((void)conv2d(xb, t.constant(w), 1, 1), value_error);
    set_conv_engine(ConvEngine::onednn);
    // blocks other than the engine's: refused by the op, returned to NCHW by the layer
    const Tf x2 = random_f(Shape{2, 2 * k, 5, 5}, rng), w2 = random_f(Shape{k, 2 * k, 3, 3}, rng);
    const auto xk2 = to_blocked(t.constant(x2), 2 * k);
    CHECK_THROWS_AS((void)conv2d(xk2, t.constant(w2), 1, 1), value_error);
    CHECK_THROWS_AS((void)conv2d(t.constant(x2), t.constant(w2), 1, 1, k / 2), value_error);
    nn::Conv2D<float, Cpu> layer(2 * k, k, 3, rng, 1, 1, false);
    CHECK(layer.forward(xk2).shape() == Shape{2, 1, 5, 5, k});
  }
  {  // a blocked forward, then the engine switched before the backward: a clear error. A
     // 1x1 convolution over a batch of 32: oneDNN's workspace (which holds a copy of dx) is
     // larger than im2col's would be, so only the layout tells the engines apart.
    Parameter<float, Cpu> pw("w", random_f(Shape{k, k, 1, 1}, rng));
    const Tf x = random_f(Shape{32, k, 16, 16}, rng);
    Tape<float, Cpu> t;
    auto y = conv2d(to_blocked(t.constant(x), k), t.param(pw), 1, 0, k);
    set_conv_engine(ConvEngine::im2col);
    try {
      t.backward(sum(y));
      FAIL("the backward ran on an engine without blocks");
    } catch (const value_error& e) {
      CHECK(std::string(e.what()).find("engine changed between forward and backward (blocks of " +
                                       std::to_string(k)) != std::string::npos);
    }
    set_conv_engine(ConvEngine::onednn);
  }
  {  // a ResNet: training keeps the blocked layout (its Conv2D writes rank 5), inference
     // does not; the blocked step against the im2col engine's NCHW step
    auto net = nn::resnet<float, Cpu>(Shape{1, 12, 12}, rng, 2 * k, 8);
    nn::Sequential<float, Cpu> first;
    first.add<nn::Conv2D<float, Cpu>>(1, 2 * k, 3, rng, 1, 1, false);
    const Tf x = random_f(Shape{6, 1, 12, 12}, rng), r = random_f(Shape{6, 8}, rng);
    {
      Tape<float, Cpu> t;
      CHECK(first.forward_blocked(t.constant(x)).shape().rank() == 5);
      first.set_training(false);
      CHECK(first.forward_blocked(t.constant(x)).shape().rank() == 4);
    }
    std::vector<float> losses, grads[2];
    for (int blocked = 0; blocked < 2; ++blocked) {
      set_conv_engine(blocked ? ConvEngine::onednn : ConvEngine::im2col);
      for (auto* p : net.parameters())
        p->zero_grad();
      Tape<float, Cpu> t;
      auto y = net.forward(t.constant(x));
      CHECK(y.shape() == Shape{6, 8});
      auto loss = sum(y * t.constant(r));
      losses.push_back(loss.value().to_vector()[0]);
      t.backward(loss);
      for (auto* p : net.parameters())
        for (float v : p->gradient().to_vector())
          grads[blocked].push_back(v);
    }
    CHECK(losses[1] == doctest::Approx(losses[0]).epsilon(1e-4));
    CHECK(max_rel_diff(grads[0], grads[1]) < 1e-3);
  }
  set_conv_engine(ConvEngine::im2col);
#else
  MESSAGE("oneDNN not built in: channel-blocked convolutions skipped");
  CHECK(conv_block<float, Cpu>() == 0);
#endif
}

TEST_CASE("layers: settings, parameters, He initialisation, errors naming the layer") {
  Rng rng(12);
  nn::Conv2D<double, Cpu> c(3, 8, 5, rng, 2, 1);
  CHECK(c.in_channels() == 3);
  CHECK(c.out_channels() == 8);
  CHECK(c.kernel() == 5);
  CHECK(c.stride() == 2);
  CHECK(c.padding() == 1);
  CHECK(c.has_bias());
  CHECK(c.parameters().size() == 2);
  CHECK(c.weight().value.shape() == Shape{8, 3, 5, 5});
  nn::Conv2D<double, Cpu> nb(3, 8, 5, rng, 1, 0, false);
  CHECK(!nb.has_bias());
  CHECK(nb.parameters().size() == 1);
  CHECK_THROWS_AS(nb.bias(), value_error);
  CHECK_THROWS_AS((nn::Conv2D<double, Cpu>(0, 8, 5, rng)), value_error);
  CHECK_THROWS_AS((nn::MaxPool2D<double, Cpu>(0, 1)), value_error);
  // He: standard deviation sqrt(2 / fan_in), fan_in = 20 * 25 = 500.
  nn::Conv2D<double, Cpu> big(20, 50, 5, rng);
  double ss = 0;
  const auto wv = big.weight().value.to_vector();
  for (double v : wv)
    ss += v * v;
  CHECK(std::sqrt(ss / double(wv.size())) == doctest::Approx(std::sqrt(2.0 / 500)).epsilon(0.03));

  Tape<double, Cpu> t;
  Td x(Shape{2, 1, 28, 28});
  try {
    nn::Conv2D<double, Cpu> c3(3, 4, 5, rng);
    (void)c3.forward(t.constant(x));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("Conv2D(3, 4, 5") != std::string::npos);
    CHECK(m.find("[2 x 1 x 28 x 28]") != std::string::npos);
  }
  try {
    nn::Conv2D<double, Cpu> c7(1, 4, 29, rng);
    (void)c7.forward(t.constant(x));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("Conv2D(1, 4, 29") != std::string::npos);
    CHECK(m.find("larger than the padded input") != std::string::npos);
  }
  nn::MaxPool2D<double, Cpu> mp(30);
  CHECK_THROWS_WITH_AS(mp.forward(t.constant(x)), doctest::Contains("MaxPool2D(30"), shape_error);
}

TEST_CASE("lenet: Caffe's mnist_siamese network, shapes, parameters, gradients of every layer") {
  Rng rng(13);
  auto net = nn::lenet<double, Cpu>(rng);
  CHECK(net.describe().find("Conv2D(1, 20, 5") != std::string::npos);
  CHECK(net.describe().find("Conv2D(20, 50, 5") != std::string::npos);
  CHECK(net.describe().find("Dense(800, 500)") != std::string::npos);
  index_t count = 0;
  for (auto* p : net.parameters())
    count += p->value.size();
  CHECK(count == 20 * 25 + 20 + 50 * 500 + 50 + 800 * 500 + 500 + 500 * 2 + 2);
  // Rows of 784 and 1 x 28 x 28 images give the same embedding.
  Td rows = random(Shape{3, 784}, rng);
  Tape<double, Cpu> t;
  const auto a = net.forward(t.constant(rows)).value().to_vector();
  View<double, Cpu> img(rows.data(), Shape{3, 1, 28, 28});
  const auto b = net.forward(t.constant(img)).value().to_vector();
  CHECK(a.size() == 6);
  CHECK(a == b);
}

TEST_CASE("a steady-state LeNet Siamese training step (float, CPU) allocates nothing") {
  Rng rng(14);
  auto net = nn::lenet<float, Cpu>(rng);
  auto params = net.parameters();
  optim::Adam<float, Cpu> adam(params, {1e-4, 0.9, 0.99, 1e-8});
  const index_t pairs = 12;
  const Tf batch = random_f(Shape{2 * pairs, 784}, rng, 0, 1);
  std::vector<float> lab(static_cast<std::size_t>(pairs));
  for (std::size_t i = 0; i < lab.size(); ++i)
    lab[i] = float(i % 2);
  const Tf labels = Tf::from(Shape{pairs}, std::span<const float>(lab));
  Tape<float, Cpu> tape;
  double first = 0, last = 0;
  auto step = [&] {
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(batch));
    auto loss = contrastive_loss_stacked(f, tape.constant(labels), {0.3, Reduction::sum, false});
    tape.backward(loss);
    adam.step();
    return double(loss.value().data()[0]);
  };
  first = step();
  step();
  const long before = alloc_counter::count.load();
  for (int i = 0; i < 3; ++i)
    last = step();
  CHECK(alloc_counter::count.load() - before == 0);
  CHECK(std::isfinite(last));
  CHECK(last < first);  // it learns on a fixed batch
  MESSAGE("engine: " << std::string(conv_engine_name()));
}

TEST_CASE("lenet: a model file round-trips its rank-4 weights; a MLP's file is rejected") {
  Rng rng(15);
  auto a = nn::lenet<float, Cpu>(rng);
  auto b = nn::lenet<float, Cpu>(rng);  // other weights
  const auto path = std::filesystem::temp_directory_path() / "siam_test_conv_lenet.model";
  io::save_model(path, a.parameters());
  io::load_model(path, b.parameters());
  const Tf x = random_f(Shape{3, 784}, rng, 0, 1);
  Tape<float, Cpu> t;
  const auto ea = a.forward(t.constant(x)).value().to_vector();
  const auto eb = b.forward(t.constant(x)).value().to_vector();
  CHECK(ea == eb);
  auto mlp = nn::mlp<float, Cpu>({784, 1024, 1024, 2}, rng);
  CHECK_THROWS_AS(io::load_model(path, mlp.parameters()), io_error);
  // one bit flipped in a weight: the archive's checksum tells
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(std::filesystem::file_size(path) / 2);
    f.seekg(at);
    const char c = static_cast<char>(f.get() ^ 0x10);
    f.seekp(at);
    f.put(c);
  }
  try {
    io::load_model(path, b.parameters());
    FAIL("no error");
  } catch (const io_error& e) {
    CHECK(std::string(e.what()).find("checksum mismatch") != std::string::npos);
  }
  std::filesystem::remove(path);
}

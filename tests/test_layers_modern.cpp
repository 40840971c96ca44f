// Ops and layers of modern embedding networks: batch normalisation (features and channels,
// training and inference), global and windowed average pooling, dropout, residual sums, and
// the strided/padded convolutions a ResNet uses. Gradients against central differences
// (double), values against direct loops.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <siam/autodiff/batchnorm.hpp>
#include <siam/autodiff/conv.hpp>
#include <siam/autodiff/dropout.hpp>
#include <siam/autodiff/pool.hpp>
#include <siam/siamese.hpp>
#include <vector>

#include "gradcheck.hpp"
#include "support/alloc_counter.hpp"

using namespace siam;
using gradcheck::random;
using Td = Tensor<double, Cpu>;
using Vd = Var<double, Cpu>;
using Taped = Tape<double, Cpu>;

namespace {

Td positive(Shape s, Rng& rng) {
  return random(s, rng, 0.5, 1.5);
}

// Per-channel statistics of x [N x C x S...] by the book (biased variance).
void naive_stats(const Td& x, std::vector<double>& mean, std::vector<double>& var) {
  const Shape s = x.shape();
  const index_t n = s[0], c = s[1], sp = n ? s.size() / (n * c) : 0;
  mean.assign(static_cast<std::size_t>(c), 0.0);
  var.assign(static_cast<std::size_t>(c), 0.0);
  for (index_t k = 0; k < c; ++k) {
    double sum = 0, sq = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < sp; ++j)
        sum += x[(i * c + k) * sp + j];
    const double m = sum / double(n * sp);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < sp; ++j)
        sq += (x[(i * c + k) * sp + j] - m) * (x[(i * c + k) * sp + j] - m);
    mean[static_cast<std::size_t>(k)] = m;
    var[static_cast<std::size_t>(k)] = sq / double(n * sp);
  }
}

// batch_norm projected to a scalar with a fixed random R (so dx is not trivially zero).
gradcheck::Fn bn_fn(const Td& r) {
  return [&r](Taped& t, std::vector<Vd>& v) {
    return gradcheck::project(t, batch_norm(v[0], v[1], v[2], 1e-5), r);
  };
}

}  // namespace

TEST_CASE("batch_norm: gradients in both layouts, 1x1 and empty shapes") {
  Rng rng(3);
  for (Shape s : {Shape{6, 3}, Shape{4, 2, 5}, Shape{3, 2, 3, 2}, Shape{2, 1}, Shape{2, 1, 1, 1},
                  Shape{1, 2, 2, 2}, Shape{0, 3}, Shape{0, 2, 3, 3}}) {
    CAPTURE(s.str());
    const index_t c = s[1];
    const Td r = random(s, rng);
    const auto res = gradcheck::check(
        bn_fn(r), {random(s, rng, -2, 3), random(Shape{c}, rng, -1.5, 1.5), random(Shape{c}, rng)});
    CHECK(res.checked == std::size_t(s.size() + 2 * c));
  }
}

TEST_CASE("batch_norm: values and running statistics against direct loops") {
  Rng rng(5);
  for (Shape s : {Shape{5, 3}, Shape{3, 2, 4, 3}}) {
    CAPTURE(s.str());
    const index_t c = s[1], m = s.size() / c;
    const Td x = random(s, rng, -1, 4), gamma = random(Shape{c}, rng), beta = random(Shape{c}, rng);
    Td rmean = random(Shape{c}, rng), rvar = positive(Shape{c}, rng);
    const Td rmean0(rmean), rvar0(rvar);
    Taped t;
    NoGrad<double, Cpu> ng(t);
    const Vd y = batch_norm(t.constant(x), t.constant(gamma), t.constant(beta), 1e-3,
                            BatchNormRunning<double, Cpu>{&rmean, &rvar, 0.25});
    std::vector<double> mean, var;
    naive_stats(x, mean, var);
    const index_t sp = s.size() / (s[0] * c);
    for (index_t i = 0; i < s.size(); ++i) {
      const auto k = static_cast<std::size_t>((i / sp) % c);
      const double want =
          gamma[index_t(k)] * (x[i] - mean[k]) / std::sqrt(var[k] + 1e-3) + beta[index_t(k)];
      CHECK(y.value().data()[i] == doctest::Approx(want).epsilon(1e-12));
    }
    for (index_t k = 0; k < c; ++k) {
      const auto ks = static_cast<std::size_t>(k);
      CHECK(rmean[k] == doctest::Approx(0.75 * rmean0[k] + 0.25 * mean[ks]).epsilon(1e-12));
      CHECK(rvar[k] == doctest::Approx(0.75 * rvar0[k] + 0.25 * var[ks] * double(m) / double(m - 1))
                           .epsilon(1e-12));
    }
  }
}

TEST_CASE("batch_norm_inference: gradients and values with fixed statistics") {
  Rng rng(7);
  for (Shape s : {Shape{4, 3}, Shape{2, 3, 2, 2}, Shape{1, 1}, Shape{1, 1, 1, 1}, Shape{0, 2}}) {
    CAPTURE(s.str());
    const index_t c = s[1];
    const Td r = random(s, rng), rm = random(Shape{c}, rng), rv = positive(Shape{c}, rng);
    gradcheck::check(
        [&](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(
              t, batch_norm_inference(v[0], v[1], v[2], t.constant(rm), t.constant(rv), 1e-5), r);
        },
        {random(s, rng), random(Shape{c}, rng), random(Shape{c}, rng)});
    const Td x = random(s, rng), g = random(Shape{c}, rng), b = random(Shape{c}, rng);
    Taped t;
    const Vd y = batch_norm_inference(t.constant(x), t.constant(g), t.constant(b), t.constant(rm),
                                      t.constant(rv), 1e-5);
    const index_t sp = s[0] ? s.size() / (s[0] * c) : 1;
    for (index_t i = 0; i < s.size(); ++i) {
      const index_t k = (i / sp) % c;
      CHECK(y.value().data()[i] ==
            doctest::Approx(g[k] * (x[i] - rm[k]) / std::sqrt(rv[k] + 1e-5) + b[k]).epsilon(1e-12));
    }
  }
}

TEST_CASE("batch_norm: shape and setting errors are typed and name the shapes") {
  Rng rng(9);
  const Td c3 = random(Shape{3}, rng), c2 = random(Shape{2}, rng);
  auto bn = [](double eps) {
    return [eps](Taped&, std::vector<Vd>& v) { return sum(batch_norm(v[0], v[1], v[2], eps)); };
  };
  gradcheck::check_throws_identically<shape_error>(bn(1e-5), {random(Shape{1, 3}, rng), c3, c3});
  gradcheck::check_throws_identically<shape_error>(bn(1e-5),
                                                   {random(Shape{1, 3, 1, 1}, rng), c3, c3});
  gradcheck::check_throws_identically<shape_error>(bn(1e-5), {random(Shape{4, 3}, rng), c2, c3});
  gradcheck::check_throws_identically<shape_error>(bn(1e-5), {random(Shape{4}, rng), c3, c3});
  gradcheck::check_throws_identically<value_error>(bn(0.0), {random(Shape{4, 3}, rng), c3, c3});
  gradcheck::check_throws_identically<shape_error>(
      [&](Taped& t, std::vector<Vd>& v) {
        return sum(batch_norm_inference(v[0], v[1], v[2], t.constant(c2), t.constant(c3), 1e-5));
      },
      {random(Shape{4, 3}, rng), c3, c3});
  Taped t;
  try {
    const Td one = random(Shape{1, 3, 1, 1}, rng);
    (void)batch_norm(t.constant(one), t.constant(c3), t.constant(c3));
    FAIL("no exception");
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("[1 x 3 x 1 x 1]") != std::string::npos);
  }
}

TEST_CASE("batch_norm: float matches double") {
  Rng rng(11);
  const Td x = random(Shape{4, 3, 3, 3}, rng), g = random(Shape{3}, rng), b = random(Shape{3}, rng);
  Taped td;
  const Vd yd = batch_norm(td.constant(x), td.constant(g), td.constant(b));
  Tape<float, Cpu> tf;
  auto to_float = [](const Td& d) {
    const std::vector<double> v = d.to_vector();
    return std::vector<float>(v.begin(), v.end());
  };
  const std::vector<float> xv = to_float(x), gv = to_float(g), bv = to_float(b);
  const auto X = Tensor<float, Cpu>::from(x.shape(), std::span<const float>(xv));
  const auto G = Tensor<float, Cpu>::from(g.shape(), std::span<const float>(gv));
  const auto Bb = Tensor<float, Cpu>::from(b.shape(), std::span<const float>(bv));
  const auto yf = batch_norm(tf.constant(X), tf.constant(G), tf.constant(Bb));
  for (index_t i = 0; i < x.size(); ++i)
    CHECK(double(yf.value().data()[i]) == doctest::Approx(yd.value().data()[i]).epsilon(1e-5));
}

TEST_CASE(
    "batch_norm_relu: gradients, 1x1 and empty shapes; values, gradients and running "
    "statistics as relu(batch_norm)") {
  Rng rng(41);
  for (Shape s : {Shape{6, 3}, Shape{4, 2, 5}, Shape{3, 2, 3, 2}, Shape{2, 1}, Shape{2, 1, 1, 1},
                  Shape{1, 2, 2, 2}, Shape{0, 3}, Shape{0, 2, 3, 3}}) {
    CAPTURE(s.str());
    const index_t c = s[1];
    const Td r = random(s, rng), x = random(s, rng, -2, 3);
    const Td g = random(Shape{c}, rng, -1.5, 1.5), b = random(Shape{c}, rng);
    const auto res = gradcheck::check(
        [&r](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(t, batch_norm_relu(v[0], v[1], v[2], 1e-5), r);
        },
        {x, g, b});
    CHECK(res.checked == std::size_t(s.size() + 2 * c));
    // The fused op against the two ops: values, every gradient, the running statistics.
    Td grads[2][3], outs[2], means[2], vars[2];
    for (int fused = 0; fused < 2; ++fused) {
      std::vector<Parameter<double, Cpu>> ps{{"x", Td(x)}, {"g", Td(g)}, {"b", Td(b)}};
      means[fused] = random(Shape{c}, rng);
      vars[fused] = Td(means[fused]);
      Taped t;
      const BatchNormRunning<double, Cpu> run{&means[fused], &vars[fused], 0.25};
      Vd y = fused ? batch_norm_relu(t.param(ps[0]), t.param(ps[1]), t.param(ps[2]), 1e-5, run)
                   : relu(batch_norm(t.param(ps[0]), t.param(ps[1]), t.param(ps[2]), 1e-5, run));
      outs[fused] = Td(y.value());
      t.backward(gradcheck::project(t, y, r));
      for (std::size_t k = 0; k < 3; ++k)
        grads[fused][k] = Td(ps[k].gradient());
    }
    for (index_t i = 0; i < x.size(); ++i)
      CHECK(outs[1][i] == doctest::Approx(outs[0][i]).epsilon(1e-12));
    for (std::size_t k = 0; k < 3; ++k)
      for (index_t i = 0; i < grads[0][k].size(); ++i) {
        CAPTURE(k);
        CHECK(grads[1][k][i] == doctest::Approx(grads[0][k][i]).epsilon(1e-10));
      }
  }
  // Errors name the op; one value per channel is refused as batch_norm refuses it.
  const Td c3 = random(Shape{3}, rng), c2 = random(Shape{2}, rng);
  auto bnr = [](Taped&, std::vector<Vd>& v) { return sum(batch_norm_relu(v[0], v[1], v[2])); };
  gradcheck::check_throws_identically<shape_error>(bnr, {random(Shape{1, 3}, rng), c3, c3});
  gradcheck::check_throws_identically<shape_error>(bnr, {random(Shape{4, 3}, rng), c2, c3});
  Taped t;
  try {
    const Td x = random(Shape{4, 3}, rng);
    (void)batch_norm_relu(t.constant(x), t.constant(c2), t.constant(c2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("batch_norm_relu") != std::string::npos);
    CHECK(std::string(e.what()).find("[4 x 3]") != std::string::npos);
  }
  const Td x43(Shape{4, 3});
  CHECK_THROWS_AS((void)batch_norm_relu(t.constant(x43), t.constant(c3), t.constant(c3), 0.0),
                  value_error);
}

TEST_CASE("batch_norm_relu: float on a ResNet shape matches relu(batch_norm); NaN passes") {
  using Tf = Tensor<float, Cpu>;
  Rng rng(43);
  const Shape s{6, 16, 7, 7};
  Tf x(s), dy(s), g(Shape{16}), b(Shape{16});
  for (index_t i = 0; i < x.size(); ++i) {
    x[i] = float(rng.uniform(-2, 3));
    dy[i] = float(rng.uniform(-1, 1));
  }
  for (index_t k = 0; k < 16; ++k) {
    g[k] = float(rng.uniform(0.5, 1.5));
    b[k] = float(rng.uniform(-0.5, 0.5));
  }
  x[5 * 49 + 3] = std::nanf("");  // channel 5 of image 0
  Tf outs[2], dxs[2];
  for (int fused = 0; fused < 2; ++fused) {
    Parameter<float, Cpu> px("x", Tf(x));
    Tape<float, Cpu> t;
    auto y = fused ? batch_norm_relu(t.param(px), t.constant(g), t.constant(b))
                   : relu(batch_norm(t.param(px), t.constant(g), t.constant(b)));
    outs[fused] = Tf(y.value());
    t.backward(sum(y * t.constant(dy)));
    dxs[fused] = Tf(px.gradient());
  }
  index_t nans = 0, zeros = 0;
  float dx_max = 0;  // dx = A dy + B x + C cancels: compared against the largest |dx|
  for (index_t i = 0; i < x.size(); ++i)
    if ((i / 49) % 16 != 5) dx_max = std::max(dx_max, std::abs(dxs[0][i]));
  REQUIRE(dx_max > 0.f);
  for (index_t i = 0; i < x.size(); ++i) {
    const bool nan_channel = (i / 49) % 16 == 5;
    CAPTURE(i);
    if (nan_channel) {  // the channel's statistics are NaN: every output NaN in both
      nans += std::isnan(outs[1][i]) && std::isnan(outs[0][i]);
      continue;
    }
    zeros += outs[1][i] == 0.f;
    CHECK(outs[1][i] == doctest::Approx(outs[0][i]).epsilon(1e-6));
    CHECK(std::abs(dxs[1][i] - dxs[0][i]) <= 1e-5f * dx_max);
  }
  CHECK(nans == 6 * 49);
  CHECK(zeros > x.size() / 8);  // the ReLU cut a good share: the masks were exercised
}

namespace {
// x [N x C x H x W] channel-blocked by hand: y[((n CB + b) S + q) K + u] = x[(n C + b K + u) S +
// q].
Td blocked_by_index(const Td& x, index_t k) {
  const Shape s = x.shape();
  const index_t n = s[0], c = s[1], sp = s[2] * s[3], cb = c / k;
  Td y(Shape{n, cb, s[2], s[3], k});
  for (index_t i = 0; i < n; ++i)
    for (index_t b = 0; b < cb; ++b)
      for (index_t q = 0; q < sp; ++q)
        for (index_t u = 0; u < k; ++u)
          y[((i * cb + b) * sp + q) * k + u] = x[(i * c + b * k + u) * sp + q];
  return y;
}
}  // namespace

TEST_CASE("to_blocked / from_blocked: values by index, gradients, 1x1, empty, errors") {
  Rng rng(71);
  struct L {
    Shape s;
    index_t k;
  };
  // Blocks of 16 and 8 run in tiles (positions past the last whole tile apart), others in a
  // plain loop.
  for (const L& l : {L{Shape{2, 4, 3, 2}, 2}, L{Shape{2, 6, 2, 2}, 3}, L{Shape{1, 1, 1, 1}, 1},
                     L{Shape{0, 4, 2, 2}, 2}, L{Shape{2, 32, 5, 5}, 16}, L{Shape{1, 24, 4, 5}, 8},
                     L{Shape{2, 16, 3, 3}, 16}}) {
    CAPTURE(l.s.str());
    CAPTURE(l.k);
    const Td x = random(l.s, rng);
    const Td want = blocked_by_index(x, l.k);
    Taped t;
    const Vd y = to_blocked(t.constant(x), l.k);
    REQUIRE(y.shape() == want.shape());
    for (index_t i = 0; i < want.size(); ++i)
      CHECK(y.value().data()[i] == want[i]);
    const Vd back = from_blocked(y);
    REQUIRE(back.shape() == l.s);
    for (index_t i = 0; i < x.size(); ++i)
      CHECK(back.value().data()[i] == x[i]);
    const Td rb = random(want.shape(), rng), rp = random(l.s, rng);
    gradcheck::check(
        [&](Taped& tp, std::vector<Vd>& v) {
          return gradcheck::project(tp, to_blocked(v[0], l.k), rb);
        },
        {x});
    // The gradient accumulates when the input has one already (x used twice).
    gradcheck::check(
        [&](Taped& tp, std::vector<Vd>& v) {
          return gradcheck::project(tp, from_blocked(v[0]) * 2.0 + from_blocked(v[0]), rp);
        },
        {want});
    gradcheck::check(
        [&](Taped& tp, std::vector<Vd>& v) {
          return gradcheck::project(tp, to_blocked(v[0], l.k) + to_blocked(v[0], l.k) * 0.5, rb);
        },
        {x});
  }
  auto tb = [](index_t k) {
    return [k](Taped&, std::vector<Vd>& v) { return sum(to_blocked(v[0], k)); };
  };
  auto fb = [](Taped&, std::vector<Vd>& v) { return sum(from_blocked(v[0])); };
  gradcheck::check_throws_identically<shape_error>(tb(2), {random(Shape{2, 4, 3}, rng)});
  gradcheck::check_throws_identically<shape_error>(tb(4), {random(Shape{2, 6, 2, 2}, rng)});
  gradcheck::check_throws_identically<shape_error>(tb(0), {random(Shape{2, 4, 2, 2}, rng)});
  gradcheck::check_throws_identically<shape_error>(fb, {random(Shape{2, 4, 2, 2}, rng)});
  Taped t;
  const Td x6 = random(Shape{2, 6, 2, 2}, rng);
  try {
    (void)to_blocked(t.constant(x6), 4);
    FAIL("no exception");
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("[2 x 6 x 2 x 2]") != std::string::npos);
    CHECK(std::string(e.what()).find("block 4") != std::string::npos);
  }
}

TEST_CASE("batch_norm and batch_norm_relu on channel-blocked input: NCHW's result, gradients") {
  Rng rng(73);
  // Blocks of 8 and 16 (oneDNN's), one and several of them; one image; 1 x 1 planes.
  struct L {
    Shape s;
    index_t k;
  };
  for (const L& l : {L{Shape{3, 8, 3, 2}, 8}, L{Shape{2, 16, 3, 2}, 8}, L{Shape{2, 32, 2, 3}, 16},
                     L{Shape{1, 16, 2, 2}, 16}, L{Shape{5, 8, 1, 1}, 8}}) {
    CAPTURE(l.s.str());
    CAPTURE(l.k);
    const index_t c = l.s[1];
    const Td x = random(l.s, rng, -2, 3), g = random(Shape{c}, rng, -1.5, 1.5),
             b = random(Shape{c}, rng), r = random(l.s, rng);
    const Td xb = blocked_by_index(x, l.k), rb = blocked_by_index(r, l.k);
    for (const bool with_relu : {false, true}) {
      CAPTURE(with_relu);
      auto bn = [with_relu](Vd xv, Vd gv, Vd bv, BatchNormRunning<double, Cpu> run,
                            BnLayout layout) {
        return with_relu ? batch_norm_relu(xv, gv, bv, 1e-5, run, layout)
                         : batch_norm(xv, gv, bv, 1e-5, run, layout);
      };
      // Central differences on the blocked input, its gradient also accumulated (x twice).
      gradcheck::check(
          [&](Taped& t, std::vector<Vd>& v) {
            return gradcheck::project(t, bn(v[0], v[1], v[2], {}, BnLayout::blocked) + v[0] * 0.5,
                                      rb);
          },
          {xb, g, b});
      // NCHW's values, gradients and running statistics, blocked.
      Td outs[2], grads[2][3], means[2], vars[2];
      for (int blocked = 0; blocked < 2; ++blocked) {
        std::vector<Parameter<double, Cpu>> ps{
            {"x", Td(blocked ? xb : x)}, {"g", Td(g)}, {"b", Td(b)}};
        means[blocked] = Td(g);
        vars[blocked] = Td(b);
        Taped t;
        const BatchNormRunning<double, Cpu> run{&means[blocked], &vars[blocked], 0.25};
        Vd y = bn(t.param(ps[0]), t.param(ps[1]), t.param(ps[2]), run,
                  blocked ? BnLayout::blocked : BnLayout::channels);
        outs[blocked] = Td(y.value());
        t.backward(gradcheck::project(t, y, blocked ? rb : r));
        for (std::size_t k = 0; k < 3; ++k)
          grads[blocked][k] = Td(ps[k].gradient());
      }
      const Td want_y = blocked_by_index(outs[0], l.k),
               want_dx = blocked_by_index(grads[0][0], l.k);
      for (index_t i = 0; i < x.size(); ++i) {
        CHECK(outs[1][i] == doctest::Approx(want_y[i]).epsilon(1e-12));
        CHECK(grads[1][0][i] == doctest::Approx(want_dx[i]).epsilon(1e-10));
      }
      for (std::size_t k = 1; k < 3; ++k)
        for (index_t i = 0; i < c; ++i)
          CHECK(grads[1][k][i] == doctest::Approx(grads[0][k][i]).epsilon(1e-10));
      for (index_t i = 0; i < c; ++i) {
        CHECK(means[1][i] == doctest::Approx(means[0][i]).epsilon(1e-12));
        CHECK(vars[1][i] == doctest::Approx(vars[0][i]).epsilon(1e-12));
      }
    }
  }
  // A blocked layout needs a rank-5 input, blocks of 8 or 16 and C = C/K * K weights.
  const Td c4 = random(Shape{4}, rng), c8 = random(Shape{8}, rng), c16 = random(Shape{16}, rng);
  auto bnb = [](Taped&, std::vector<Vd>& v) {
    return sum(batch_norm(v[0], v[1], v[2], 1e-5, {}, BnLayout::blocked));
  };
  gradcheck::check_throws_identically<shape_error>(bnb, {random(Shape{3, 8, 2, 2}, rng), c8, c8});
  gradcheck::check_throws_identically<shape_error>(bnb,
                                                   {random(Shape{3, 1, 2, 2, 4}, rng), c4, c4});
  gradcheck::check_throws_identically<shape_error>(bnb,
                                                   {random(Shape{3, 2, 2, 2, 8}, rng), c8, c8});
  gradcheck::check_throws_identically<shape_error>(bnb,
                                                   {random(Shape{1, 2, 1, 1, 8}, rng), c16, c16});
}

TEST_CASE("global_avg_pool2d: gradients, values and errors") {
  Rng rng(13);
  for (Shape s : {Shape{2, 3, 4, 5}, Shape{1, 1, 1, 1}, Shape{3, 2, 6}, Shape{0, 2, 3, 3}}) {
    CAPTURE(s.str());
    const Td r = random(Shape{s[0], s[1]}, rng);
    gradcheck::check(
        [&](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(t, global_avg_pool2d(v[0]), r);
        },
        {random(s, rng)});
  }
  const Td x = random(Shape{2, 3, 4, 5}, rng);
  Taped t;
  const Vd y = global_avg_pool2d(t.constant(x));
  CHECK(y.shape() == Shape{2, 3});
  for (index_t p = 0; p < 6; ++p) {
    double sum = 0;
    for (index_t j = 0; j < 20; ++j)
      sum += x[p * 20 + j];
    CHECK(y.value().data()[p] == doctest::Approx(sum / 20).epsilon(1e-12));
  }
  auto gap = [](Taped&, std::vector<Vd>& v) { return sum(global_avg_pool2d(v[0])); };
  gradcheck::check_throws_identically<shape_error>(gap, {random(Shape{4, 3}, rng)});
  gradcheck::check_throws_identically<shape_error>(gap, {Td(Shape{2, 3, 0, 4})});
}

TEST_CASE("avg_pool2d: gradients, values against windows, errors") {
  Rng rng(17);
  struct G {
    Shape s;
    index_t k, stride;
  };
  for (G g : {G{Shape{2, 3, 4, 4}, 2, 2}, G{Shape{1, 2, 5, 6}, 3, 1}, G{Shape{1, 1, 1, 1}, 1, 1},
              G{Shape{2, 1, 5, 5}, 2, 3}, G{Shape{0, 2, 4, 4}, 2, 2}}) {
    CAPTURE(g.s.str());
    const index_t oh = (g.s[2] - g.k) / g.stride + 1, ow = (g.s[3] - g.k) / g.stride + 1;
    const Td r = random(Shape{g.s[0], g.s[1], oh, ow}, rng);
    gradcheck::check(
        [&](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(t, avg_pool2d(v[0], g.k, g.stride), r);
        },
        {random(g.s, rng)});
    const Td x = random(g.s, rng);
    Taped t;
    const Vd y = avg_pool2d(t.constant(x), g.k, g.stride);
    REQUIRE(y.shape() == Shape{g.s[0], g.s[1], oh, ow});
    for (index_t pl = 0; pl < g.s[0] * g.s[1]; ++pl)
      for (index_t p = 0; p < oh; ++p)
        for (index_t q = 0; q < ow; ++q) {
          double sum = 0;
          for (index_t i = 0; i < g.k; ++i)
            for (index_t j = 0; j < g.k; ++j)
              sum += x[(pl * g.s[2] + p * g.stride + i) * g.s[3] + q * g.stride + j];
          CHECK(y.value().data()[(pl * oh + p) * ow + q] ==
                doctest::Approx(sum / double(g.k * g.k)).epsilon(1e-12));
        }
  }
  auto pool = [](index_t k, index_t s) {
    return [k, s](Taped&, std::vector<Vd>& v) { return sum(avg_pool2d(v[0], k, s)); };
  };
  gradcheck::check_throws_identically<shape_error>(pool(2, 2), {random(Shape{4, 4}, rng)});
  gradcheck::check_throws_identically<shape_error>(pool(5, 1), {random(Shape{1, 1, 4, 4}, rng)});
  gradcheck::check_throws_identically<shape_error>(pool(2, 0), {random(Shape{1, 1, 4, 4}, rng)});
}

TEST_CASE("dropout: inverted scaling, reproducible masks, gradients, errors") {
  Rng rng(19);
  const Shape s{64, 1024};
  const int before = num_threads();
  Tensor<float, Cpu> x(s);
  x.fill(1.0f);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    set_num_threads(threads);
    Tape<float, Cpu> t;
    const auto y = dropout(t.constant(x), 0.3, 42, 7);
    const auto v = y.value().to_vector();
    if (first.empty()) first = v;
    CHECK(v == first);  // bit for bit, any thread count
  }
  set_num_threads(before);
  std::size_t dropped = 0;
  for (float v : first) {
    CHECK((v == 0.0f || v == doctest::Approx(1.0 / 0.7).epsilon(1e-6)));
    dropped += v == 0.0f;
  }
  // 65536 draws with p = 0.3: the standard deviation of the fraction is 0.0018.
  CHECK(double(dropped) / double(first.size()) == doctest::Approx(0.3).epsilon(0.03));
  {
    Tape<float, Cpu> t;
    CHECK(dropout(t.constant(x), 0.3, 42, 8).value().to_vector() != first);          // another step
    CHECK(dropout(t.constant(x), 0.3, 43, 7).value().to_vector() != first);          // another seed
    CHECK(dropout(t.constant(x), 0.0, 42, 7).value().to_vector() == x.to_vector());  // p = 0
  }
  for (Shape gs : {Shape{5, 7}, Shape{1, 1}, Shape{0, 3}, Shape{2, 3, 4, 4}}) {
    CAPTURE(gs.str());
    const Td r = random(gs, rng);
    gradcheck::check(
        [&](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(t, dropout(v[0], 0.4, 1, 2), r);
        },
        {random(gs, rng)});
  }
  for (double p : {-0.1, 1.0, std::nan("")}) {
    CAPTURE(p);
    gradcheck::check_throws_identically<value_error>(
        [p](Taped&, std::vector<Vd>& v) { return sum(dropout(v[0], p, 1, 2)); },
        {random(Shape{2, 2}, rng)});
  }
}

TEST_CASE("conv2d: the stride and padding combinations of a ResNet, and a residual sum") {
  Rng rng(23);
  struct G {
    Shape x, w;
    index_t stride, pad;
  };
  // 3x3 same (stride 1, pad 1); 3x3 down (stride 2, pad 1) on even and odd sizes; the 1x1
  // stride-2 projection, whose output must match the 3x3 stride-2 one for the residual sum.
  for (G g : {G{Shape{2, 2, 5, 5}, Shape{3, 2, 3, 3}, 1, 1},
              G{Shape{2, 2, 6, 6}, Shape{2, 2, 3, 3}, 2, 1},
              G{Shape{1, 2, 7, 7}, Shape{2, 2, 3, 3}, 2, 1},
              G{Shape{1, 2, 7, 7}, Shape{3, 2, 1, 1}, 2, 0},
              G{Shape{2, 1, 1, 1}, Shape{1, 1, 3, 3}, 1, 1}}) {
    CAPTURE(g.x.str());
    CAPTURE(g.stride);
    const index_t oh = (g.x[2] + 2 * g.pad - g.w[2]) / g.stride + 1;
    const Td r = random(Shape{g.x[0], g.w[0], oh, oh}, rng);
    gradcheck::check(
        [&](Taped& t, std::vector<Vd>& v) {
          return gradcheck::project(t, conv2d(v[0], v[1], g.stride, g.pad), r);
        },
        {random(g.x, rng), random(g.w, rng)});
  }
  for (index_t h : {6, 7, 28, 14}) {
    CAPTURE(h);
    Taped t;
    const Td x = random(Shape{1, 2, h, h}, rng), w3 = random(Shape{4, 2, 3, 3}, rng),
             w1 = random(Shape{4, 2, 1, 1}, rng);
    CHECK(conv2d(t.constant(x), t.constant(w3), 2, 1).shape() ==
          conv2d(t.constant(x), t.constant(w1), 2, 0).shape());
  }
  // body(x) + x with x used twice: the gradient of x sums both paths.
  const Td r = random(Shape{2, 2, 4, 4}, rng);
  gradcheck::check(
      [&](Taped& t, std::vector<Vd>& v) {
        return gradcheck::project(t, relu(conv2d(v[0], v[1], 1, 1)) + v[0], r);
      },
      {random(Shape{2, 2, 4, 4}, rng), random(Shape{2, 2, 3, 3}, rng)});
}

// ---- layers

#include <filesystem>
#include <siam/io/model_file.hpp>
#include <siam/nn/resnet.hpp>

namespace {

using Seq = nn::Sequential<double, Cpu>;

// Central differences of L = sum(layer(x) * R) for every element of x and of every
// parameter, against the tape's gradients (the layer's own parameters, in double).
void check_layer(nn::Layer<double, Cpu>& layer, const Td& x0, double tol = 1e-6) {
  Rng rng(99);
  Parameter<double, Cpu> x("x", Td(x0));
  Taped t;
  Td r;
  auto loss = [&] {
    t.reset();
    Vd y = layer.forward(t.param(x));
    if (r.size() != y.shape().size()) r = random(y.shape(), rng);
    return gradcheck::project(t, y, r);
  };
  std::vector<Parameter<double, Cpu>*> ps = layer.parameters();
  ps.push_back(&x);
  for (auto* p : ps)
    p->zero_grad();
  t.backward(loss());
  for (auto* p : ps) {
    CAPTURE(p->name);
    const std::vector<double> analytic = p->gradient().to_vector();
    for (index_t i = 0; i < p->value.size(); ++i) {
      const double v = p->value[i];
      double f[2];
      for (int k = 0; k < 2; ++k) {
        p->value[i] = v + (k ? -1e-6 : 1e-6);
        NoGrad<double, Cpu> ng(t);
        f[k] = loss().value().item();
      }
      p->value[i] = v;
      const double numeric = (f[0] - f[1]) / 2e-6, a = analytic[std::size_t(i)];
      CAPTURE(i);
      CHECK(std::abs(a - numeric) / std::max({1.0, std::abs(a), std::abs(numeric)}) <= tol);
    }
  }
}

// Non-trivial BatchNorm affine parameters and running statistics (a fresh layer has 1 and 0).
void randomise(nn::Layer<double, Cpu>& l, Rng& rng) {
  for (auto* p : l.parameters())
    for (index_t i = 0; i < p->value.size(); ++i)
      p->value[i] += rng.uniform(-0.5, 0.5);
  for (auto* b : l.buffers())
    for (index_t i = 0; i < b->value.size(); ++i)
      b->value[i] += rng.uniform(0.1, 0.5);
}

Seq basic_body(index_t in, index_t out, index_t stride, Rng& rng) {
  Seq body;
  body.add<nn::Conv2D<double, Cpu>>(in, out, 3, rng, stride, 1, false)
      .add<nn::BatchNorm<double, Cpu>>(out)
      .add<nn::ReLU<double, Cpu>>()
      .add<nn::Conv2D<double, Cpu>>(out, out, 3, rng, 1, 1, false)
      .add<nn::BatchNorm<double, Cpu>>(out);
  return body;
}

}  // namespace

TEST_CASE("BatchNorm layer: training and inference modes, buffers, gradients") {
  Rng rng(29);
  for (Shape s : {Shape{6, 3}, Shape{3, 3, 4, 4}}) {
    CAPTURE(s.str());
    nn::BatchNorm<double, Cpu> bn(3);
    randomise(bn, rng);
    const Td x = random(s, rng, -1, 3);
    check_layer(bn, x);  // training: the batch's statistics
    std::vector<double> mean, var;
    naive_stats(x, mean, var);
    {  // one more training step, then the running statistics moved by momentum 0.1
      const Td m1(bn.running_mean());
      Taped t;
      (void)bn.forward(t.constant(x));
      CHECK(bn.running_mean()[1] == doctest::Approx(0.9 * m1[1] + 0.1 * mean[1]).epsilon(1e-12));
    }
    bn.set_training(false);
    check_layer(bn, x);  // inference: the running statistics
    Taped t;
    const Vd y = bn.forward(t.constant(x));
    const index_t sp = s.size() / (s[0] * 3);
    for (index_t i = 0; i < s.size(); ++i) {
      const index_t k = (i / sp) % 3;
      CHECK(y.value().data()[i] ==
            doctest::Approx(bn.weight().value[k] * (x[i] - bn.running_mean()[k]) /
                                std::sqrt(bn.running_var()[k] + 1e-5) +
                            bn.bias().value[k])
                .epsilon(1e-12));
    }
  }
  using BN = nn::BatchNorm<double, Cpu>;
  CHECK_THROWS_AS(BN(0), value_error);
  CHECK_THROWS_AS(BN(3, 0.0), value_error);
  CHECK_THROWS_AS(BN(3, 1e-5, 1.5), value_error);
  BN bn(3);
  {  // num_batches_tracked counts training steps; inference leaves every buffer alone
    const Td x = random(Shape{4, 3}, rng);
    Taped t;
    (void)bn.forward(t.constant(x));
    CHECK(bn.buffers()[2]->value[0] == 1);
    bn.set_training(false);
    (void)bn.forward(t.constant(x));
    CHECK(bn.buffers()[2]->value[0] == 1);
    bn.set_training(true);
  }
  Taped t;
  const Td bad = random(Shape{4, 2}, rng);
  CHECK_THROWS_AS((void)bn.forward(t.constant(bad)), shape_error);
  CHECK_THROWS_AS((void)bn.output_shape(Shape{2, 5, 5}), shape_error);
}

TEST_CASE("Sequential: a channel-blocked batch gives NCHW's result through every layer") {
  // BatchNorm and ReLU take the blocked batch as it is (training), the Residual's Conv2D
  // returns it to NCHW (the im2col engine has no blocked layout) and the block's sum blocks
  // its body again to match the identity; GlobalAvgPool gets NCHW from the Sequential.
  Rng rng(75);
  Seq net;
  net.add<nn::BatchNorm<double, Cpu>>(8).add<nn::ReLU<double, Cpu>>();
  net.add(std::make_unique<nn::Residual<double, Cpu>>(basic_body(8, 8, 1, rng)));
  net.add<nn::ReLU<double, Cpu>>().add<nn::BatchNorm<double, Cpu>>(8);
  net.add<nn::GlobalAvgPool<double, Cpu>>().add<nn::Dense<double, Cpu>>(8, 3, rng);
  randomise(net, rng);
  const Td x = random(Shape{3, 8, 4, 4}, rng), r = random(Shape{3, 3}, rng);
  std::vector<double> outs[2], grads[2], gx[2];
  for (int blocked = 0; blocked < 2; ++blocked) {
    for (auto* p : net.parameters())
      p->zero_grad();
    Parameter<double, Cpu> px("x", Td(x));
    Taped t;
    Vd in = t.param(px);
    const Vd y = net.forward(blocked ? to_blocked(in, 8) : in);
    CHECK(y.shape() == Shape{3, 3});
    outs[blocked] = y.value().to_vector();
    t.backward(gradcheck::project(t, y, r));
    for (auto* p : net.parameters())
      for (double v : p->gradient().to_vector())
        grads[blocked].push_back(v);
    gx[blocked] = px.gradient().to_vector();
  }
  for (std::size_t i = 0; i < outs[0].size(); ++i)
    CHECK(outs[1][i] == doctest::Approx(outs[0][i]).epsilon(1e-12));
  REQUIRE(grads[0].size() == grads[1].size());
  for (std::size_t i = 0; i < grads[0].size(); ++i)
    CHECK(grads[1][i] == doctest::Approx(grads[0][i]).epsilon(1e-10));
  for (std::size_t i = 0; i < gx[0].size(); ++i)
    CHECK(gx[1][i] == doctest::Approx(gx[0][i]).epsilon(1e-10));
  // forward_blocked keeps the layout where the last layer took it; forward never does.
  Seq bn;
  bn.add<nn::BatchNorm<double, Cpu>>(8).add<nn::ReLU<double, Cpu>>();
  Taped t;
  CHECK(bn.forward_blocked(to_blocked(t.constant(x), 8)).shape().rank() == 5);
  CHECK(bn.forward(to_blocked(t.constant(x), 8)).shape() == Shape{3, 8, 4, 4});
  bn.set_training(false);  // inference: NCHW first
  CHECK(bn.forward_blocked(to_blocked(t.constant(x), 8)).shape() == Shape{3, 8, 4, 4});
}

TEST_CASE("Residual: gradients with and without a projection; shape errors") {
  Rng rng(31);
  {  // identity shortcut
    nn::Residual<double, Cpu> block(basic_body(2, 2, 1, rng));
    randomise(block, rng);
    check_layer(block, random(Shape{2, 2, 4, 4}, rng));
    block.set_training(false);
    check_layer(block, random(Shape{2, 2, 4, 4}, rng));
    CHECK(block.output_shape(Shape{2, 5, 5}) == Shape{2, 5, 5});
    const Td x = random(Shape{2, 2, 4, 4}, rng);
    Taped t;
    const auto y = block.forward(t.constant(x)).value().to_vector();
    const auto body = block.body().forward(t.constant(x)).value().to_vector();
    for (std::size_t i = 0; i < y.size(); ++i)
      CHECK(y[i] == doctest::Approx(body[i] + x[index_t(i)]).epsilon(1e-12));
  }
  {  // projection: 1x1 stride-2 convolution and BatchNorm, odd input size
    Seq proj;
    proj.add<nn::Conv2D<double, Cpu>>(2, 3, 1, rng, 2, 0, false).add<nn::BatchNorm<double, Cpu>>(3);
    nn::Residual<double, Cpu> block(basic_body(2, 3, 2, rng), std::move(proj));
    randomise(block, rng);
    check_layer(block, random(Shape{2, 2, 5, 5}, rng));
    CHECK(block.output_shape(Shape{2, 5, 5}) == Shape{3, 3, 3});
    block.set_training(false);  // deterministic paths, compared with their sum
    const Td x = random(Shape{2, 2, 5, 5}, rng);
    Taped t;
    const auto y = block.forward(t.constant(x)).value().to_vector();
    const auto body = block.body().forward(t.constant(x)).value().to_vector();
    const auto short_cut = block.projection().forward(t.constant(x)).value().to_vector();
    for (std::size_t i = 0; i < y.size(); ++i)
      CHECK(y[i] == doctest::Approx(body[i] + short_cut[i]).epsilon(1e-12));
    CHECK(block.parameters().size() == 9);
    CHECK(block.buffers().size() == 9);
    const auto names = block.tensor_names();
    CHECK(names[0].name == "body.0.weight");
    CHECK(names[6].name == "projection.0.weight");
    CHECK(block.buffer_names()[0].name == "body.1.running_mean");
    CHECK(block.buffer_names()[8].name == "projection.1.num_batches_tracked");
  }
  {  // Residual + ReLU in a Sequential runs as one add_relu: gradients, and the values and
     // gradients of the unfused relu(block(x)) bit for bit
    Seq proj;
    proj.add<nn::Conv2D<double, Cpu>>(2, 3, 1, rng, 2, 0, false).add<nn::BatchNorm<double, Cpu>>(3);
    Seq net;
    net.add(std::make_unique<nn::Residual<double, Cpu>>(basic_body(2, 2, 1, rng)))
        .add<nn::ReLU<double, Cpu>>()
        .add(std::make_unique<nn::Residual<double, Cpu>>(basic_body(2, 3, 2, rng), std::move(proj)))
        .add<nn::ReLU<double, Cpu>>();
    randomise(net, rng);
    CHECK(net[0].fuses_relu());
    check_layer(net, random(Shape{3, 2, 5, 5}, rng));
    Parameter<double, Cpu> x("x", random(Shape{3, 2, 5, 5}, rng));
    const Td w = random(Shape{3, 3, 3, 3}, rng);
    std::vector<double> y[2], g[2];
    for (int fused = 0; fused < 2; ++fused) {
      for (auto* p : net.parameters())
        p->zero_grad();
      x.zero_grad();
      Taped t;
      Vd v = t.param(x);
      if (fused) {
        v = net.forward(v);
      } else {
        v = relu(net[0].forward(v));
        v = relu(net[2].forward(v));
      }
      y[fused] = v.value().to_vector();
      t.backward(sum(v * t.constant(w)));
      g[fused] = x.gradient().to_vector();
      for (auto* p : net.parameters())
        for (double d : p->gradient().to_vector())
          g[fused].push_back(d);
    }
    CHECK(y[1] == y[0]);
    CHECK(g[1] == g[0]);
    CHECK(std::count(y[1].begin(), y[1].end(), 0.0) > 0);  // some units are off
  }
  {  // a body that changes the shape without a projection
    nn::Residual<double, Cpu> block(basic_body(2, 3, 1, rng));
    Taped t;
    const Td x = random(Shape{2, 2, 4, 4}, rng);
    CHECK_THROWS_AS((void)block.forward(t.constant(x)), shape_error);
    CHECK_THROWS_AS((void)block.output_shape(Shape{2, 4, 4}), shape_error);
  }
}

TEST_CASE("pooling and dropout layers: shapes, modes, errors") {
  Rng rng(37);
  nn::GlobalAvgPool<double, Cpu> gap;
  CHECK(gap.output_shape(Shape{8, 7, 7}) == Shape{8});
  check_layer(gap, random(Shape{2, 3, 3, 3}, rng));
  nn::AvgPool2D<double, Cpu> ap(2, 2);
  CHECK(ap.output_shape(Shape{3, 7, 6}) == Shape{3, 3, 3});
  CHECK_THROWS_AS((void)ap.output_shape(Shape{3, 1, 6}), shape_error);
  using AP = nn::AvgPool2D<double, Cpu>;
  CHECK_THROWS_AS(AP(0, 1), value_error);
  check_layer(ap, random(Shape{2, 2, 4, 5}, rng));
  nn::Dropout<double, Cpu> drop(0.5, rng);
  using DO = nn::Dropout<double, Cpu>;
  CHECK_THROWS_AS(DO(1.0, rng), value_error);
  const Td x = random(Shape{8, 16}, rng, 1, 2);
  Taped t;
  const auto a = drop.forward(t.constant(x)).value().to_vector();
  const auto b = drop.forward(t.constant(x)).value().to_vector();
  CHECK(a != b);  // a new mask each training step
  CHECK(drop.step() == 2);
  drop.set_training(false);
  CHECK(drop.forward(t.constant(x)).value().to_vector() == x.to_vector());
}

TEST_CASE("Sequential: train/eval reach nested layers; embed runs in inference mode") {
  Rng rng(41);
  Seq net = nn::resnet<double, Cpu>(Shape{1, 8, 8}, rng, 2, 5);
  CHECK(net.training());
  const Td x = random(Shape{4, 64}, rng);
  // embed: inference mode (running statistics: mean 0, variance 1 at first), the mode restored
  Tensor<double, Cpu> e1(net.embed(x));
  CHECK(net.training());
  const auto count = [&] { return net.buffers()[2]->value[0]; };
  CHECK(count() == 0);  // embed updated no running statistics
  Taped t;
  const Td xi = random(Shape{4, 1, 8, 8}, rng);
  (void)net.forward(t.constant(xi));
  CHECK(count() == 1);
  net.eval();
  Taped t2;
  const auto y_eval = net.forward(t2.constant(xi)).value().to_vector();
  CHECK(count() == 1);
  CHECK(Tensor<double, Cpu>(net.embed(xi)).to_vector() == y_eval);
  CHECK(!net.training());
  net.train();
  Taped t3;
  CHECK(net.forward(t3.constant(xi)).value().to_vector() != y_eval);
  CHECK(e1.shape() == Shape{4, 5});
}

TEST_CASE("resnet_specs: the network's structure, model files and specs round trip") {
  const auto l = nn::resnet_specs(Shape{1, 28, 28}, 32, 64);
  // stem 3 + 6 blocks (Residual line + 5 body + ReLU; 2 more for the 2 projections) + 3
  CHECK(l.size() == 3 + 6 * 7 + 2 * 2 + 3);
  CHECK(l[3].str() == "Residual body=5 projection=0");
  CHECK(l[17].str() == "Residual body=5 projection=2");
  CHECK_THROWS_AS(nn::resnet_specs(Shape{784}), value_error);
  CHECK_THROWS_AS(nn::resnet_specs(Shape{1, 28, 28}, 0), value_error);
  Rng rng(43);
  Seq net = nn::resnet<double, Cpu>(Shape{1, 28, 28}, rng, 32, 64);
  CHECK(net.output_shape(Shape{1, 28, 28}) == Shape{64});
  std::vector<std::string> a, b;
  for (const auto& s : nn::specs(net))
    a.push_back(s.str());
  for (const auto& s : l)
    b.push_back(s.str());
  CHECK(a == b);
  // a small one through a model file: same embeddings, running statistics kept
  Seq small = nn::resnet<double, Cpu>(Shape{1, 8, 8}, rng, 2, 3);
  const Td x = random(Shape{6, 1, 8, 8}, rng);
  for (int step = 0; step < 3; ++step) {
    Taped t;
    (void)small.forward(t.constant(x));
  }
  const auto path = std::filesystem::temp_directory_path() / "siam_test_resnet.model";
  io::save_model(path, small);
  Seq back = io::load_model<double, Cpu>(path);
  std::filesystem::remove(path);
  REQUIRE(back.buffers().size() == small.buffers().size());
  for (std::size_t i = 0; i < back.buffers().size(); ++i)
    CHECK(back.buffers()[i]->value.to_vector() == small.buffers()[i]->value.to_vector());
  CHECK(Tensor<double, Cpu>(back.embed(x)).to_vector() ==
        Tensor<double, Cpu>(small.embed(x)).to_vector());
  // a Residual line whose layers are missing
  std::vector<nn::LayerSpec> cut(l.begin(), l.begin() + 6);
  auto build_cut = [&] { return nn::build<double, Cpu>(cut, Shape{1, 28, 28}, rng); };
  CHECK_THROWS_AS(build_cut(), value_error);
}

TEST_CASE("a steady-state ResNet Siamese training step (float, CPU) allocates nothing") {
  Rng rng(47);
  auto net = nn::resnet<float, Cpu>(Shape{1, 12, 12}, rng, 4, 8);
  net.add(std::make_unique<nn::Dropout<float, Cpu>>(0.1, rng));
  auto params = net.parameters();
  optim::Adam<float, Cpu> adam(params, {1e-3, 0.9, 0.99, 1e-8});
  const index_t pairs = 6;
  Tensor<float, Cpu> batch(Shape{2 * pairs, 1, 12, 12});
  for (index_t i = 0; i < batch.size(); ++i)
    batch[i] = float(rng.uniform());
  std::vector<float> lab(static_cast<std::size_t>(pairs));
  for (std::size_t i = 0; i < lab.size(); ++i)
    lab[i] = float(i % 2);
  const auto labels = Tensor<float, Cpu>::from(Shape{pairs}, std::span<const float>(lab));
  Tape<float, Cpu> tape;
  double first = 0, last = 0;
  auto step = [&] {
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(batch));
    auto loss = contrastive_loss_stacked(f, tape.constant(labels), {0.5, Reduction::sum, false});
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
}

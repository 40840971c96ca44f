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

// Expressions against plain loops, the zero-allocation promise, shape errors, aliasing
// and views.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <siam/siamese.hpp>
#include <vector>

#include "support/alloc_counter.hpp"

using namespace siam;
using Tf = Tensor<float, Cpu>;
using Td = Tensor<double, Cpu>;

namespace {
Tf random_tensor(Shape s, Rng& rng, double lo = -2, double hi = 2) {
  Tf t(s);
  for (index_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<float>(rng.uniform(lo, hi));
  return t;
}
}  // namespace

TEST_CASE("elementwise expressions match plain loops") {
  Rng rng(1);
  for (Shape s : {Shape{1}, Shape{1, 1}, Shape{7, 13}, Shape{300, 301}, Shape{2, 3, 4, 5}}) {
    CAPTURE(s.str());
    Tf a = random_tensor(s, rng), b = random_tensor(s, rng, 0.5, 3);
    Tf r = (a + b) * 2.f - a / b + exp(a * 0.5f) - log(b) + sqrt(b) + square(a) - (-a) +
           maximum(a, 0.25f) + minimum(b, 1.f) + relu(a) * step(a) + relu_grad(b, a);
    for (index_t i = 0; i < a.size(); ++i) {
      const float x = a[i], y = b[i];
      const float ref = (x + y) * 2.f - x / y + std::exp(x * 0.5f) - std::log(y) + std::sqrt(y) +
                        x * x + x + std::max(x, 0.25f) + std::min(y, 1.f) +
                        (x > 0 ? x : 0.f) * (x > 0 ? 1.f : 0.f) + (x > 0 ? y : 0.f);
      REQUIRE(r[i] == doctest::Approx(ref).epsilon(1e-5));
    }
  }
}

TEST_CASE("finite and mul_or_zero: exact switches, NaN and Inf included") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tf x = Tf::from(Shape{6}, {0.f, -3.5f, 1e30f, inf, -inf, nan});
  const Tf fin = finite(x);
  CHECK(fin.to_vector() == std::vector<float>{1, 1, 1, 0, 0, 0});
  // a == 0 switches the term off whatever b holds; otherwise it is a * b, bit for bit
  const Tf a = Tf::from(Shape{6}, {0.f, 0.f, 0.f, 2.f, 0.5f, -1.f});
  const Tf b = Tf::from(Shape{6}, {nan, inf, 7.f, 3.f, -inf, 0.25f});
  const Tf r = mul_or_zero(a, b);
  CHECK(r[0] == 0.f);
  CHECK(r[1] == 0.f);
  CHECK(r[2] == 0.f);
  CHECK(r[3] == 6.f);
  CHECK(r[4] == -inf);
  CHECK(r[5] == -0.25f);
  Tf e(Shape{0});
  const Tf fe = finite(e);  // an empty tensor evaluates to an empty one
  CHECK(fe.size() == 0);
}

TEST_CASE("broadcasts and reductions match plain loops") {
  Rng rng(2);
  const index_t R = 37, C = 300;
  Tf x = random_tensor(Shape{R, C}, rng), b = random_tensor(Shape{C}, rng);
  Tf col = random_tensor(Shape{R, 1}, rng), s = random_tensor(Shape{1}, rng);
  Tf y = x + broadcast_rows(b, R) * broadcast_cols(col, C) - broadcast_scalar(s, Shape{R, C});
  Tf rows = sum_rows(x), cols = sum_cols(x), all = sum_all(x * 2.f);
  REQUIRE(rows.shape() == Shape{C});
  REQUIRE(cols.shape() == Shape{R, 1});
  REQUIRE(all.shape() == Shape{1});
  double total = 0;
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < C; ++c) {
      REQUIRE(y(r, c) == doctest::Approx(x(r, c) + b[c] * col[r] - s[0]).epsilon(1e-6));
      total += 2.0 * x(r, c);
    }
  for (index_t c = 0; c < C; ++c) {
    double acc = 0;
    for (index_t r = 0; r < R; ++r)
      acc += x(r, c);
    REQUIRE(rows[c] == doctest::Approx(acc).epsilon(1e-5));
  }
  for (index_t r = 0; r < R; ++r) {
    double acc = 0;
    for (index_t c = 0; c < C; ++c)
      acc += x(r, c);
    REQUIRE(cols[r] == doctest::Approx(acc).epsilon(1e-5));
  }
  CHECK(all.item() == doctest::Approx(total).epsilon(1e-5));
  // Empty tensors reduce to zero.
  Tf empty(Shape{0, 5});
  CHECK(Tf(sum_all(empty)).item() == 0.f);
  CHECK(Tf(sum_rows(empty)).to_vector() == std::vector<float>(5, 0.f));
}

TEST_CASE("large reductions: right, and bit-identical for any thread count") {
  // Above the parallel threshold, with more columns than one panel of partial totals.
  Rng rng(4);
  const index_t R = 301, C = 2500;  // several row blocks, an uneven last one
  const Tf x = random_tensor(Shape{R, C}, rng), h = random_tensor(Shape{R, C}, rng);
  const Tf prior = random_tensor(Shape{C}, rng);
  const index_t pairs = 20000;  // pairs x 2 values: above the threshold too
  const Tf f = random_tensor(Shape{2 * pairs, 2}, rng, -0.3, 0.3);
  Tf labels(Shape{pairs});
  for (index_t i = 0; i < labels.size(); ++i)
    labels[i] = static_cast<float>(i % 3 == 0);
  struct Run {
    std::vector<float> rows, acc_rows, masked, mask_rows, all, loss, c, g;
  };
  auto run = [&](int threads) {
    set_num_threads(threads);
    Run r;
    r.rows = Tf(sum_rows(x)).to_vector();
    Tf acc(prior);
    acc += sum_rows(x);
    r.acc_rows = acc.to_vector();
    Tf dz(x), db(Shape{C});  // ReLU backward with the bias gradient, as linear_relu does
    Cpu::assign_sum_rows(dz.data(), db.data(), R, C, relu_grad(x, h).kernel(), false);
    r.masked = dz.to_vector();
    r.mask_rows = db.to_vector();
    r.all = Tf(sum_all(x)).to_vector();
    const index_t n = labels.size();
    Tf c(Shape{n}), loss(Shape{1}), g(Shape{2 * n, 2});
    Cpu::contrastive_forward(f.data(), f.data() + 2 * n, labels.data(), n, index_t{2}, 0.3f, 0.5f,
                             1e-6f, c.data(), loss.data());
    const float dl = 1.5f;
    Cpu::contrastive_backward(f.data(), f.data() + 2 * n, c.data(), &dl, n, index_t{2}, g.data(),
                              false, g.data() + 2 * n, false);
    r.loss = loss.to_vector();
    r.c = c.to_vector();
    r.g = g.to_vector();
    return r;
  };
  const int before = num_threads();
  const Run one = run(1);
  double total = 0;
  for (index_t c = 0; c < C; ++c) {
    double acc = 0, masked = 0;
    for (index_t r = 0; r < R; ++r) {
      acc += x(r, c);
      masked += h(r, c) > 0 ? x(r, c) : 0.0;
    }
    total += acc;
    REQUIRE(one.rows[c] == doctest::Approx(acc).epsilon(1e-4));
    REQUIRE(one.acc_rows[c] == doctest::Approx(acc + prior[c]).epsilon(1e-4));
    REQUIRE(one.mask_rows[c] == doctest::Approx(masked).epsilon(1e-4));
  }
  for (index_t i = 0; i < x.size(); ++i)
    REQUIRE(one.masked[i] == (h[i] > 0 ? x[i] : 0.f));
  CHECK(one.all[0] == doctest::Approx(total).epsilon(1e-4).scale(1e-3 * x.size()));
  for (int threads : {2, 3}) {
    CAPTURE(threads);
    const Run other = run(threads);
    CHECK(other.rows == one.rows);
    CHECK(other.acc_rows == one.acc_rows);
    CHECK(other.masked == one.masked);
    CHECK(other.mask_rows == one.mask_rows);
    CHECK(other.all == one.all);
    CHECK(other.loss == one.loss);
    CHECK(other.c == one.c);
    CHECK(other.g == one.g);
  }
  set_num_threads(before);
}

TEST_CASE("matmul matches a triple loop for every transpose combination") {
  Rng rng(3);
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, std::tuple{5, 7, 3}, std::tuple{64, 33, 129}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        Td a(ta ? Shape{k, m} : Shape{m, k}), b(tb ? Shape{n, k} : Shape{k, n});
        for (index_t i = 0; i < a.size(); ++i)
          a[i] = rng.uniform(-1, 1);
        for (index_t i = 0; i < b.size(); ++i)
          b[i] = rng.uniform(-1, 1);
        Td c = matmul(a, b, ta, tb);
        REQUIRE(c.shape() == Shape{m, n});
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double acc = 0;
            for (index_t l = 0; l < k; ++l)
              acc += (ta ? a(l, i) : a(i, l)) * (tb ? b(j, l) : b(l, j));
            REQUIRE(c(i, j) == doctest::Approx(acc).epsilon(1e-12));
          }
        Td c2(c);
        c2 += matmul(a, b, ta, tb);  // GEMM with beta = 1
        for (index_t i = 0; i < c.size(); ++i)
          REQUIRE(c2[i] == doctest::Approx(2 * c[i]));
      }
  }
}

TEST_CASE("a 5-operation expression into an existing tensor allocates nothing") {
  Rng rng(4);
  Tf a = random_tensor(Shape{256, 512}, rng), b = random_tensor(Shape{256, 512}, rng);
  Tf bias = random_tensor(Shape{512}, rng);
  Tf out(Shape{256, 512});
  Tf colsum(Shape{512});
  const long before = alloc_counter::count.load();
  out = relu(a * 2.f + b - broadcast_rows(bias, 256)) / (square(b) + 1.f);  // 7 ops
  colsum = sum_rows(out * b);
  a = a * 2.f + a;  // in place, aliasing its own operand
  const long after = alloc_counter::count.load();
  CHECK(after - before == 0);
  // and it computed the right thing
  CHECK(out(3, 4) == doctest::Approx(std::max(0.f, a(3, 4) / 3.f * 2.f + b(3, 4) - bias[4]) /
                                     (b(3, 4) * b(3, 4) + 1.f)));
}

TEST_CASE("expressions are lazy and hold temporaries by value") {
  Rng rng(5);
  Tf a = random_tensor(Shape{4, 4}, rng);
  auto make = [&] { return Tf(a) * 3.f + 1.f; };  // the Tf(a) temporary lives in the node
  auto e = make();
  a.fill(0.f);  // the copy inside e is unaffected; nothing has been computed yet
  const long before = alloc_counter::count.load();
  Tf r(Shape{4, 4});
  const long mid = alloc_counter::count.load();
  r = e;
  CHECK(alloc_counter::count.load() - mid == 0);
  CHECK(mid - before == 1);
  auto lazy = a + 1.f;  // refers to a
  a.fill(2.f);
  Tf l = lazy;
  CHECK(l[0] == 3.f);
}

TEST_CASE("aliasing: in-place updates and self-referencing broadcasts are correct") {
  Tf a = Tf::from(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  a = a * 2.f + a;
  CHECK(a.to_vector() == std::vector<float>{3, 6, 9, 12, 15, 18});
  // row 0 broadcast onto a tensor that contains it: must not read overwritten rows
  Tf m = Tf::from(Shape{3, 2}, {1, 2, 3, 4, 5, 6});
  m.row_slice(0, 3) = m + broadcast_rows(m.row_slice(0, 1), 3);
  CHECK(m.to_vector() == std::vector<float>{2, 4, 4, 6, 6, 8});
  // a shifted overlapping slice
  Tf s = Tf::from(Shape{3, 1}, {1, 2, 3});
  s.row_slice(1, 2) = s.row_slice(0, 2) * 10.f;
  CHECK(s.to_vector() == std::vector<float>{1, 10, 20});
  // GEMM into one of its operands
  Tf g = Tf::from(Shape{2, 2}, {1, 2, 3, 4});
  g = matmul(g, g);
  CHECK(g.to_vector() == std::vector<float>{7, 10, 15, 22});
  // reduction into its operand
  Tf v = Tf::from(Shape{1, 3}, {1, 2, 3});
  v = sum_cols(v);
  CHECK(v.to_vector() == std::vector<float>{6});
}

TEST_CASE("views: row slices read and write the rows of their tensor") {
  Tf t = Tf::from(Shape{4, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  auto top = t.row_slice(0, 2), bottom = t.row_slice(2, 2);
  CHECK(top.shape() == Shape{2, 2});
  bottom = bottom + top;
  CHECK(t.to_vector() == std::vector<float>{0, 1, 2, 3, 4, 6, 8, 10});
  CHECK_THROWS_AS((void)t.row_slice(3, 2), shape_error);
  CHECK_THROWS_AS((void)t.row_slice(-1, 1), shape_error);
}

TEST_CASE("tensors: explicit copies, cheap moves, buffer reuse") {
  Tf a = Tf::from(Shape{2, 2}, {1, 2, 3, 4});
  Tf b(a);
  b[0] = 9;
  CHECK(a[0] == 1);
  const float* p = a.data();
  Tf c = std::move(a);
  CHECK(c.data() == p);
  CHECK(a.empty());
  c.resize(Shape{1, 3});
  CHECK(c.data() == p);  // fits in the old buffer
  CHECK_THROWS_AS(c.reshape(Shape{2, 2}), shape_error);
  CHECK_THROWS_AS(Tf::from(Shape{2}, {1.f, 2.f, 3.f}), shape_error);
  CHECK(Shape({1, 2, 3, 4, 5}).size() == 120);  // rank 5: channel-blocked activations
  CHECK_THROWS_AS((void)Shape({1, 2, 3, 4, 5, 6}), shape_error);
  CHECK_THROWS_AS((void)Shape({-1, 2}), shape_error);
  CHECK_THROWS_AS((void)Shape({1LL << 40, 1LL << 40}), shape_error);
  CHECK_THROWS_AS((void)c.item(), shape_error);
}

TEST_CASE("shape errors name the operation and both shapes") {
  Tf a(Shape{2, 3}), b(Shape{3, 2}), r(Shape{4});
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const shape_error& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  CHECK(message([&] { (void)(a + b); }) == "add: shapes [2 x 3] and [3 x 2] do not match");
  CHECK(message([&] { (void)(a * r); }) == "mul: shapes [2 x 3] and [4] do not match");
  CHECK(message([&] { (void)matmul(a, a); }) == "matmul: cannot multiply [2 x 3] by [2 x 3]");
  CHECK(message([&] { (void)broadcast_rows(a, 3); }).find("[2 x 3] is not a row vector") !=
        std::string::npos);
  CHECK(message([&] { a.view() = b + b; }).find("[2 x 3] and [3 x 2]") != std::string::npos);
  CHECK_NOTHROW((void)matmul(a, a, false, true));
}

TEST_CASE("a repeated loss on a reused tape allocates nothing (labels checked in place)") {
  Rng rng(6);
  Tf f = random_tensor(Shape{8, 2}, rng), y = Tf::from(Shape{4}, {1, 0, 1, 0});
  Tape<float, Cpu> tape;
  Parameter<float, Cpu> p("f", Tf(f));
  auto step = [&] {
    tape.reset();
    p.zero_grad();
    auto l = contrastive_loss_stacked(tape.param(p), tape.constant(y));  // check_labels on
    tape.backward(l);
    return l.value().item();
  };
  const float first = step();
  const long before = alloc_counter::count.load();
  const float second = step();
  CHECK(alloc_counter::count.load() - before == 0);
  CHECK(first == second);
}

// The CPU GEMM provider (backend/cpu_gemm.hpp) in float, the type the configured
// provider serves (oneDNN, a BLAS or Eigen), against a double-precision triple loop: every
// transpose combination, row strides wider than the rows, alpha and beta (beta = 0 must
// not read C, which holds NaN), k = 0, 1x1 and empty products, several threads; and the
// provider's name matches the build's configuration.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "siam/siamese.hpp"
#include "support/alloc_counter.hpp"

using namespace siam;

namespace {

// Stored operands with a row stride `pad` elements wider than their rows.
struct Strided {
  index_t rows, cols, ld;
  std::vector<float> v;
  Strided(index_t r, index_t c, index_t pad, Rng& rng)
      : rows(r), cols(c), ld(c + pad), v(static_cast<std::size_t>(r * (c + pad))) {
    for (float& x : v)
      x = static_cast<float>(rng.uniform(-1, 1));
  }
  float at(index_t i, index_t j) const { return v[static_cast<std::size_t>(i * ld + j)]; }
};

void check_case(index_t m, index_t n, index_t k, bool ta, bool tb, float alpha, float beta,
                index_t pad, Rng& rng) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(alpha);
  CAPTURE(beta);
  CAPTURE(pad);
  const Strided a(ta ? k : m, ta ? m : k, pad, rng), b(tb ? n : k, tb ? k : n, pad, rng);
  Strided c(m, n, pad, rng);
  if (beta == 0.0f)  // must never be read
    for (float& x : c.v)
      x = std::numeric_limits<float>::quiet_NaN();
  const Strided c0 = c;
  Cpu::gemm(ta, tb, m, n, k, alpha, a.v.data(), a.ld, b.v.data(), b.ld, beta, c.v.data(), c.ld);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double acc = 0, mag = 0;
      for (index_t l = 0; l < k; ++l) {
        const double p =
            double(ta ? a.at(l, i) : a.at(i, l)) * double(tb ? b.at(j, l) : b.at(l, j));
        acc += p;
        mag += std::fabs(p);
      }
      const double old = beta == 0.0f ? 0.0 : beta * double(c0.at(i, j));
      const double ref = alpha * acc + old;
      const double tol = 1e-5 * (std::fabs(alpha) * mag + std::fabs(old)) + 1e-30;
      REQUIRE(std::fabs(double(c.at(i, j)) - ref) <= tol);
    }
  // The padding between rows is never written.
  for (index_t i = 0; i < m; ++i)
    for (index_t j = n; j < c.ld; ++j)
      REQUIRE(((std::isnan(c.at(i, j)) && std::isnan(c0.at(i, j))) || c.at(i, j) == c0.at(i, j)));
}

}  // namespace

TEST_CASE("the CPU GEMM provider matches a double triple loop") {
  Rng rng(11);
  const int before = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (auto [m, n, k] : {std::tuple<index_t, index_t, index_t>{1, 1, 1},
                           {5, 7, 3},
                           {2, 1, 9},
                           {64, 33, 129},
                           {360, 2, 100},
                           {100, 2, 360},
                           {37, 300, 2},
                           {16, 16, 4100},
                           {20, 700, 90},
                           // narrow products past the skinny kernel's 512-wide chunks, large
                           // enough to be split between threads
                           {1100, 3, 1300},
                           {1200, 1030, 4}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          check_case(m, n, k, ta, tb, 1.0f, 0.0f, 0, rng);
          check_case(m, n, k, ta, tb, 1.0f, 1.0f, 3, rng);
          check_case(m, n, k, ta, tb, -0.5f, 0.25f, 1, rng);
        }
  }
  set_num_threads(before);
}

TEST_CASE("GEMM with k = 0 scales C by beta; empty results touch nothing") {
  Rng rng(12);
  check_case(4, 3, 0, false, false, 1.0f, 0.0f, 0, rng);  // C becomes 0 (NaN not read)
  check_case(4, 3, 0, true, true, 1.0f, 0.5f, 2, rng);
  float c = 7.0f;
  Cpu::gemm(false, false, 0, 1, 5, 1.0f, static_cast<const float*>(nullptr), 5,
            static_cast<const float*>(nullptr), 1, 0.0f, &c, 1);
  Cpu::gemm(false, false, 1, 0, 5, 1.0f, static_cast<const float*>(nullptr), 5,
            static_cast<const float*>(nullptr), 1, 0.0f, &c, 1);
  CHECK(c == 7.0f);
}

TEST_CASE("gemm_provider names the configured provider") {
  const std::string p = gemm_provider();
  CHECK((p == "onednn" || p == "openblas" || p == "blis" || p == "eigen"));
#if defined(SIAM_TEST_EXPECTED_GEMM_PROVIDER)
  CHECK(p == SIAM_TEST_EXPECTED_GEMM_PROVIDER);
#endif
  static_assert(gemm_provider()[0] != '\0', "a constant expression, usable at compile time");
}

TEST_CASE("matmul in float goes through the provider and matches double") {
  Rng rng(13);
  Tensor<float, Cpu> a(Shape{50, 70}), b(Shape{70, 30});
  Tensor<double, Cpu> ad(Shape{50, 70}), bd(Shape{70, 30});
  for (index_t i = 0; i < a.size(); ++i)
    ad[i] = a[i] = static_cast<float>(rng.uniform(-1, 1));
  for (index_t i = 0; i < b.size(); ++i)
    bd[i] = b[i] = static_cast<float>(rng.uniform(-1, 1));
  Tensor<float, Cpu> c = matmul(a, b);
  Tensor<double, Cpu> cd = matmul(ad, bd);
  for (index_t i = 0; i < c.size(); ++i)
    REQUIRE(double(c[i]) == doctest::Approx(cd[i]).epsilon(1e-5));
}

TEST_CASE("a repeated float GEMM allocates nothing through operator new, on 1 and 2 threads") {
  Rng rng(14);
  const index_t m = 360, n = 256, k = 300;
  std::vector<float> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n)),
      c(static_cast<std::size_t>(m * n));
  for (float& x : a)
    x = static_cast<float>(rng.uniform(-1, 1));
  for (float& x : b)
    x = static_cast<float>(rng.uniform(-1, 1));
  const int before = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int warm = 0; warm < 2; ++warm)
      Cpu::gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    const long news = alloc_counter::count.load();
    for (int rep = 0; rep < 3; ++rep) {
      Cpu::gemm(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
      Cpu::gemm(true, true, n, m, k, 1.0f, b.data(), n, a.data(), k, 0.0f, c.data(), m);
      // skinny products (the step's layer of width 2), too small to split across threads
      Cpu::gemm(false, false, m, 2, k, 1.0f, a.data(), k, b.data(), 2, 0.0f, c.data(), 2);
      Cpu::gemm(true, false, k, 2, m, 1.0f, a.data(), k, b.data(), 2, 0.0f, c.data(), 2);
      // enough work to share (over 10^6 multiply-adds) but a single 16-row block: one thread
      Cpu::gemm(false, true, 16, 16, 4100, 1.0f, a.data(), 4100, b.data(), 4100, 0.0f, c.data(),
                16);
    }
    CAPTURE(threads);
    CHECK(alloc_counter::count.load() - news == 0);
  }
  set_num_threads(before);
}

TEST_CASE("round_mantissa: to nearest, ties to even, at TF32's 10 and BF16's 7 bits") {
  CHECK(round_mantissa(1.0f, 7) == 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (BF16 neighbours): ties go to even (1).
  CHECK(round_mantissa(1.0f + 0x1p-8f, 7) == 1.0f);
  CHECK(round_mantissa(1.0f + 3 * 0x1p-8f, 7) == 1.0f + 0x1p-6f);         // halfway, even is up
  CHECK(round_mantissa(1.0f + 0x1p-8f + 0x1p-20f, 7) == 1.0f + 0x1p-7f);  // above halfway
  CHECK(round_mantissa(-1.0f - 0x1p-11f - 0x1p-20f, 10) == -1.0f - 0x1p-10f);
  CHECK(round_mantissa(-1.0f - 0x1p-12f, 10) == -1.0f);
  CHECK(round_mantissa(0.1f, 23) == 0.1f);
  CHECK(std::isnan(round_mantissa(std::numeric_limits<float>::quiet_NaN(), 7)));
  CHECK(round_mantissa(std::numeric_limits<float>::infinity(), 7) ==
        std::numeric_limits<float>::infinity());
  CHECK(round_mantissa(std::numeric_limits<float>::max(), 7) ==
        std::numeric_limits<float>::infinity());  // rounds past the largest finite value
  CHECK(parse_matmul_precision("medium") == MatmulPrecision::medium);
  CHECK_THROWS_WITH_AS(parse_matmul_precision("fp16"), doctest::Contains("'fp16'"), value_error);
}

TEST_CASE("the CPU's TF32 and BF16 emulation: FP32 products of rounded inputs, within bounds") {
  struct Reset {
    ~Reset() { Cpu::set_matmul_precision(MatmulPrecision::highest); }
  } reset;
  Rng rng(5);
  const index_t m = 33, n = 17, k = 300;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      std::vector<float> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n));
      for (auto& x : a)
        x = static_cast<float>(rng.uniform(-1, 1));
      for (auto& x : b)
        x = static_cast<float>(rng.uniform(-1, 1));
      const index_t lda = ta ? m : k, ldb = tb ? k : n;
      const auto run = [&](MatmulPrecision p, const std::vector<float>& aa,
                           const std::vector<float>& bb) {
        Cpu::set_matmul_precision(p);
        std::vector<float> c(static_cast<std::size_t>(m * n), 0.0f);
        Cpu::gemm<float>(ta, tb, m, n, k, 1.0f, aa.data(), lda, bb.data(), ldb, 0.0f, c.data(), n);
        return c;
      };
      const auto exact = run(MatmulPrecision::highest, a, b);
      for (const auto p : {MatmulPrecision::high, MatmulPrecision::medium}) {
        CAPTURE(to_string(p));
        auto ra = a, rb = b;
        for (auto& x : ra)
          x = round_mantissa(x, mantissa_bits(p));
        for (auto& x : rb)
          x = round_mantissa(x, mantissa_bits(p));
        const auto got = run(p, a, b);
        CHECK(got == run(MatmulPrecision::highest, ra, rb));  // exactly the rounded product
        double worst = 0;
        for (std::size_t i = 0; i < got.size(); ++i)
          worst = std::max(worst, double(std::abs(got[i] - exact[i])) / k);
        // each input is off by at most 2^-(bits+1) relative; |terms| <= 1
        CHECK(worst < 2 * std::ldexp(1.0, -mantissa_bits(p)));
        CHECK(worst > 0);
      }
    }
}

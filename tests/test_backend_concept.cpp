// The Backend concept (siam/backend_concept.hpp) and a backend written from it alone: Counted
// forwards each required function to the CPU backend (it derives from nothing) and counts
// the calls; a small network's forward and backward on it equals the CPU's bit for bit.
// The compile-fail test compile_fail_backend_missing_gemm checks the static_assert message.
#include <doctest/doctest.h>

#include <map>
#include <siam/siamese.hpp>
#include <string>
#include <vector>

namespace {

using siam::Cpu;
using siam::index_t;

struct Counted {
  static inline std::map<std::string, long> calls;

  static constexpr bool is_host = true;
  static constexpr const char* name = "counted";
  using StepGraph = siam::detail::ReplayGraph;

  template <class T>
  static T* allocate(index_t n) {
    ++calls["allocate"];
    return Cpu::allocate<T>(n);
  }
  template <class T>
  static void deallocate(T* p, index_t n) noexcept {
    Cpu::deallocate(p, n);
  }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) {
    ++calls["copy"];
    Cpu::copy(dst, src, n);
  }
  template <class T>
  static void to_host(T* dst, const T* src, index_t n) {
    ++calls["to_host"];
    Cpu::to_host(dst, src, n);
  }
  template <class T>
  static void from_host(T* dst, const T* src, index_t n) {
    ++calls["from_host"];
    Cpu::from_host(dst, src, n);
  }
  static void synchronize() { Cpu::synchronize(); }
  template <class T, class K>
  static void assign(T* dst, index_t rows, index_t cols, const K& k) {
    ++calls["assign"];
    Cpu::assign(dst, rows, cols, k);
  }
  template <class T, class... P>
  static void assign_fused(index_t n, const P&... p) {
    ++calls["assign_fused"];
    Cpu::assign_fused<T>(n, p...);
  }
  template <class T, class G>
  static void assign_fused_batch(const G* groups, std::size_t count) {
    ++calls["assign_fused_batch"];
    Cpu::assign_fused_batch<T>(groups, count);
  }
  template <class T, class K>
  static void sum_rows(T* out, index_t rows, index_t cols, const K& k, bool acc) {
    ++calls["sum_rows"];
    Cpu::sum_rows(out, rows, cols, k, acc);
  }
  template <class T, class K>
  static void assign_sum_rows(T* dst, T* out, index_t rows, index_t cols, const K& k, bool acc) {
    ++calls["assign_sum_rows"];
    Cpu::assign_sum_rows(dst, out, rows, cols, k, acc);
  }
  template <class T, class K>
  static void sum_cols(T* out, index_t rows, index_t cols, const K& k, bool acc) {
    ++calls["sum_cols"];
    Cpu::sum_cols(out, rows, cols, k, acc);
  }
  template <class T, class K>
  static void sum_all(T* out, index_t rows, index_t cols, const K& k, bool acc) {
    ++calls["sum_all"];
    Cpu::sum_all(out, rows, cols, k, acc);
  }
  template <class T, class K>
  static void max_cols(T* out, index_t rows, index_t cols, const K& k) {
    ++calls["max_cols"];
    Cpu::max_cols(out, rows, cols, k);
  }
  template <class T>
  static void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, T alpha, const T* A,
                   index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
    ++calls["gemm"];
    Cpu::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  template <class T>
  static void gather_rows(T* dst, const T* src, const std::uint32_t* idx, index_t n, index_t cols) {
    ++calls["gather_rows"];
    Cpu::gather_rows(dst, src, idx, n, cols);
  }
  template <class T>
  static void scatter_add_rows(T* dst, const T* src, const std::uint32_t* idx, index_t n,
                               index_t cols) {
    ++calls["scatter_add_rows"];
    Cpu::scatter_add_rows(dst, src, idx, n, cols);
  }
};

static_assert(siam::Backend<Cpu, float> && siam::Backend<Cpu, double>);
static_assert(siam::Backend<Counted, double>);

// One function short of a backend: each group of the concept notices.
struct NoGemm : Counted {
  static void gemm() = delete;
};
struct NoSumAll : Counted {
  static void sum_all() = delete;
};
struct NoStepGraph {
  static constexpr bool is_host = true;
  static constexpr const char* name = "x";
};
static_assert(!siam::Backend<NoGemm, double> && !siam::BackendLinearAlgebra<NoGemm, double>);
static_assert(!siam::Backend<NoSumAll, double> && !siam::BackendKernels<NoSumAll, double>);
static_assert(!siam::BackendTraits<NoStepGraph> && !siam::Backend<int>);

// conv -> max-pool -> flatten -> linear_relu -> gather -> sum of squares, forward and
// backward on backend B: {loss, dx, dw, dv, db}.
template <class B>
std::vector<std::vector<double>> small_network() {
  using TB = siam::Tensor<double, B>;
  siam::Rng rng(7);
  auto draw = [&](siam::Shape s) {
    std::vector<double> v(static_cast<std::size_t>(s.size()));
    for (auto& e : v)
      e = rng.normal();
    return TB::from(s, v);
  };
  siam::Parameter<double, B> x("x", draw(siam::Shape{2, 1, 6, 6})),
      w("w", draw(siam::Shape{3, 1, 3, 3})), v("v", draw(siam::Shape{12, 4})),
      b("b", draw(siam::Shape{4}));
  siam::Tape<double, B> t;
  auto h = siam::max_pool2d(siam::conv2d(t.param(x), t.param(w), 1, 0), 2, 2);  // 2x3x2x2
  auto y = siam::linear_relu(siam::flatten(h), t.param(v), t.param(b));         // 2x4
  const std::vector<std::uint32_t> rows{1, 0, 1};
  auto g = siam::gather_rows(y, rows);
  auto loss = siam::sum(siam::square(g));
  t.backward(loss);
  return {loss.value().to_vector(), x.gradient().to_vector(), w.gradient().to_vector(),
          v.gradient().to_vector(), b.gradient().to_vector()};
}

}  // namespace

TEST_CASE("Backend concept: a forwarding backend runs a network as the CPU does, bit for bit") {
  Counted::calls.clear();
  const auto on_cpu = small_network<Cpu>();
  const auto on_counted = small_network<Counted>();
  REQUIRE(on_cpu.size() == on_counted.size());
  for (std::size_t i = 0; i < on_cpu.size(); ++i) {
    CAPTURE(i);
    REQUIRE(on_cpu[i].size() == on_counted[i].size());
    CHECK(!on_cpu[i].empty());
    for (std::size_t j = 0; j < on_cpu[i].size(); ++j)
      CHECK(on_counted[i][j] == on_cpu[i][j]);
  }
  // Every op went through the backend's functions.
  for (const char* f : {"allocate", "from_host", "to_host", "assign", "gemm", "sum_all",
                        "gather_rows", "scatter_add_rows"}) {
    CAPTURE(f);
    CHECK(Counted::calls[f] > 0);
  }
}

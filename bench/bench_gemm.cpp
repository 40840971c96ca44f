// GEMM throughput on the shapes of the example's training step (a stacked batch of
// 360 = 2 x 180 images through 784-1024-1024-2) and of inference (5000 images), in
// GFLOP/s (counter "flops", a rate). Families:
//   gemm_naive/...  a plain triple loop: the floor (step shapes only, one iteration);
//   gemm_<backend>  siam::Cpu::gemm, i.e. Eigen's product, or a BLAS when this
//                   translation unit is compiled with EIGEN_USE_BLAS (bench_gemm_openblas,
//                   bench_gemm_blis: the same source, linked against that library).
// Names end in /threads:N, the thread count given to siam (and to the BLAS): 1 and all
// hardware threads, or the list in SIAM_BENCH_THREADS (e.g. "1,2").
//
// BLAS results depend on the environment: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE can force
// slower OpenBLAS kernels, and BLIS 0.9 needs BLIS_ARCH_TYPE on CPUs it does not know.
// The values in effect and the kernels chosen are printed in the benchmark context.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"
#include "bench_peak.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "siam/siamese.hpp"

#if defined(SIAM_BENCH_BLAS_OPENBLAS)
extern "C" {
char* openblas_get_corename(void);
char* openblas_get_config(void);
int openblas_get_parallel(void);
void openblas_set_num_threads(int);
}
#elif defined(SIAM_BENCH_BLAS_BLIS)
extern "C" {  // from blis.h, whose 40k lines are not -Wpedantic clean
void bli_init(void);
void bli_thread_set_num_threads(std::int64_t);
int bli_arch_query_id(void);
char* bli_arch_string(int);
char* bli_info_get_version_str(void);
}
#endif

namespace {

using siam::index_t;
using Mat = siam::Tensor<float, siam::Cpu>;

#if defined(SIAM_BENCH_BLAS_OPENBLAS)
constexpr const char* backend = "openblas";
#elif defined(SIAM_BENCH_BLAS_BLIS)
constexpr const char* backend = "blis";
#else
constexpr const char* backend = "eigen";
#endif

/// Row-major C[m x n] = op(A) op(B), as the training step calls it.
struct GemmCase {
  const char* name;
  index_t m, n, k;
  bool trans_a, trans_b;
  bool step;  // part of the training step (else inference: too slow for the naive loop)
};

// Layer l: Z_l = H_{l-1} W_l (+ b). Forward, input gradients dH = dZ W^T, weight
// gradients dW = H^T dZ. dX1 is not needed (the input is data).
constexpr GemmCase cases[] = {
    {"fwd1_X.W1", 360, 1024, 784, false, false, true},
    {"fwd2_H1.W2", 360, 1024, 1024, false, false, true},
    {"fwd3_H2.W3", 360, 2, 1024, false, false, true},
    {"dH1_dZ2.W2T", 360, 1024, 1024, false, true, true},
    {"dH2_dZ3.W3T", 360, 1024, 2, false, true, true},
    {"dW1_XT.dZ1", 784, 1024, 360, true, false, true},
    {"dW2_H1T.dZ2", 1024, 1024, 360, true, false, true},
    {"dW3_H2T.dZ3", 1024, 2, 360, true, false, true},
    {"inf1_X.W1", 5000, 1024, 784, false, false, false},
    {"inf2_H1.W2", 5000, 1024, 1024, false, false, false},
};

struct Operands {
  Mat a, b, c;
  index_t lda, ldb;
};

Operands make_operands(const GemmCase& g) {
  siam::Rng rng(42);
  auto random = [&](index_t rows, index_t cols) {
    Mat t = Mat::uninitialized(siam::Shape{rows, cols});
    for (index_t i = 0; i < t.size(); ++i)
      t[i] = static_cast<float>(rng.uniform(-1, 1));
    return t;
  };
  // Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k when transposed).
  Operands o{g.trans_a ? random(g.k, g.m) : random(g.m, g.k),
             g.trans_b ? random(g.n, g.k) : random(g.k, g.n),
             Mat::uninitialized(siam::Shape{g.m, g.n}), 0, 0};
  o.lda = o.a.cols();
  o.ldb = o.b.cols();
  return o;
}

void set_threads(int n) {
  siam::set_num_threads(n);
#if defined(SIAM_BENCH_BLAS_OPENBLAS)
  openblas_set_num_threads(n);
#elif defined(SIAM_BENCH_BLAS_BLIS)
  bli_thread_set_num_threads(n);
#endif
}

void finish(benchmark::State& state, const GemmCase& g) {
  const double flops =
      2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.k);
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

void bm_library(benchmark::State& state, GemmCase g, int threads) {
  Operands o = make_operands(g);
  set_threads(threads);
  for (auto _ : state) {
    siam::Cpu::gemm(g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb,
                    0.0f, o.c.data(), g.n);
    benchmark::DoNotOptimize(o.c.data());
    benchmark::ClobberMemory();
  }
  finish(state, g);
}

#if !defined(EIGEN_USE_BLAS)  // the floor is measured once, in the Eigen build
// The floor: what one writes without thinking about caches. Rows split across threads.
void naive_gemm(const GemmCase& g, const float* a, index_t lda, const float* b, index_t ldb,
                float* c) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (index_t i = 0; i < g.m; ++i) {
    for (index_t j = 0; j < g.n; ++j) {
      float acc = 0;
      for (index_t p = 0; p < g.k; ++p)
        acc += (g.trans_a ? a[p * lda + i] : a[i * lda + p]) *
               (g.trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * g.n + j] = acc;
    }
  }
}

void bm_naive(benchmark::State& state, GemmCase g, int threads) {
  Operands o = make_operands(g);
  set_threads(threads);
  for (auto _ : state) {
    naive_gemm(g, o.a.data(), o.lda, o.b.data(), o.ldb, o.c.data());
    benchmark::DoNotOptimize(o.c.data());
    benchmark::ClobberMemory();
  }
  finish(state, g);
}
#endif

std::string shape_name(const GemmCase& g) {
  return std::string(g.name) + "/m:" + std::to_string(g.m) + "/n:" + std::to_string(g.n) +
         "/k:" + std::to_string(g.k);
}

const char* env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "(unset)";
}

void add_context() {
  benchmark::AddCustomContext("gemm_backend", backend);
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#if defined(SIAM_BENCH_BLAS_OPENBLAS)
  static const char* const parallel[] = {"sequential", "pthreads", "openmp"};
  const int p = openblas_get_parallel();
  benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("openblas_threading", p >= 0 && p <= 2 ? parallel[p] : "?");
#elif defined(SIAM_BENCH_BLAS_BLIS)
  bli_init();  // the architecture can only be queried once BLIS is initialised
  benchmark::AddCustomContext("blis_version", bli_info_get_version_str());
  benchmark::AddCustomContext("blis_arch", bli_arch_string(bli_arch_query_id()));
#endif
  for (const char* v :
       {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "BLIS_ARCH_TYPE", "OMP_NUM_THREADS"})
    benchmark::AddCustomContext(std::string("env_") + v, env_or_unset(v));
}

// The machine's FP32 multiply-add ceiling (bench_peak.hpp): GEMM rates are read against it.
void bm_peak_fma(benchmark::State& state, int threads) {
  bench::peak_fma(state, threads);
}

void register_all() {
  for (int t : bench::thread_counts())
    benchmark::RegisterBenchmark(("peak_fma/threads:" + std::to_string(t)).c_str(), bm_peak_fma, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (int t : bench::thread_counts()) {
    for (const GemmCase& g : cases) {
      const std::string suffix = shape_name(g) + "/threads:" + std::to_string(t);
      benchmark::RegisterBenchmark(("gemm_" + std::string(backend) + "/" + suffix).c_str(),
                                   bm_library, g, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
#if !defined(EIGEN_USE_BLAS)
      if (g.step)
        benchmark::RegisterBenchmark(("gemm_naive/" + suffix).c_str(), bm_naive, g, t)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(1);
#endif
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  add_context();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// GEMM throughput on the shapes of the example's training step (a stacked batch of
// 360 = 2 x 180 images through 784-1024-1024-2) and of inference (5000 images), in
// GFLOP/s (counter "flops", a rate), for every CPU GEMM provider siam can use, in one
// process so that they are measured side by side:
//   gemm_siam-<p>/...  siam::Cpu::gemm, the provider p this build uses, as siam calls it;
//   gemm_eigen/...     Eigen's own product (siam::detail::gemm_eigen; absent when siam is
//                      configured to route Eigen to a BLAS);
//   gemm_onednn/...    oneDNN's dnnl_sgemm (when the benchmark links oneDNN);
//   gemm_openblas/...  cblas_sgemm of OpenBLAS's OpenMP build,   loaded with dlopen
//   gemm_blis/...      cblas_sgemm of BLIS's OpenMP build,       (RTLD_LOCAL), so both
//                      live in one process without their BLAS symbols clashing;
//   gemm_naive/...     a plain triple loop: the floor (step shapes only, one iteration);
//   step8_<provider>   the eight products of one training step in a row, and
//   infer2_<provider>  the two large products of embedding 5000 images;
//   peak_fma           the machine's FP32 multiply-add ceiling, to read the rates against.
// The provider siam itself uses in this build is printed as siam_gemm_provider.
// Names end in /threads:N, the thread count given to siam and to each library: 1 and all
// hardware threads, or the list in SIAM_BENCH_THREADS (e.g. "1,2").
//
// BLAS results depend on the environment: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE can force
// slower OpenBLAS kernels, and BLIS 0.9 needs BLIS_ARCH_TYPE on CPUs it does not know.
// The values in effect and the kernels chosen are printed in the benchmark context.
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include "bench_common.hpp"
#include "bench_peak.hpp"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "siam/siamese.hpp"

#if defined(SIAM_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#endif

namespace {

using siam::index_t;
using Mat = siam::Tensor<float, siam::Cpu>;

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

double flop(const GemmCase& g) {
  return 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) * static_cast<double>(g.k);
}

// ---- providers: one signature, row-major, C = op(A) op(B)
using GemmFn =
    std::function<void(const GemmCase&, const float*, index_t, const float*, index_t, float*)>;
struct Provider {
  std::string name;
  GemmFn gemm;
  std::function<void(int)> set_threads;  // beyond siam::set_num_threads (OpenMP, Eigen)
};

// A CBLAS loaded privately: dlopen(RTLD_LOCAL) keeps its cblas_sgemm out of the global
// symbol scope, so OpenBLAS and BLIS can be measured in one process.
using cblas_sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                               int, float, float*, int);
struct Cblas {
  void* handle = nullptr;
  cblas_sgemm_t sgemm = nullptr;
  std::string path;
  explicit Cblas(const char* lib) : path(lib) {
    if (path.empty()) return;
    handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (handle) sgemm = reinterpret_cast<cblas_sgemm_t>(dlsym(handle, "cblas_sgemm"));
  }
  template <class F>
  F symbol(const char* name) const {
    return handle ? reinterpret_cast<F>(dlsym(handle, name)) : nullptr;
  }
  Cblas(const Cblas&) = delete;
  Cblas& operator=(const Cblas&) = delete;
  ~Cblas() {
    if (handle) dlclose(handle);
  }
};

#if !defined(SIAM_BENCH_OPENBLAS_PATH)
#define SIAM_BENCH_OPENBLAS_PATH ""
#endif
#if !defined(SIAM_BENCH_BLIS_PATH)
#define SIAM_BENCH_BLIS_PATH ""
#endif
const Cblas& openblas() {
  static const Cblas lib(SIAM_BENCH_OPENBLAS_PATH);
  return lib;
}
const Cblas& blis() {
  static const Cblas lib(SIAM_BENCH_BLIS_PATH);
  return lib;
}

GemmFn cblas_gemm(const Cblas& lib) {
  return [f = lib.sgemm](const GemmCase& g, const float* a, index_t lda, const float* b,
                         index_t ldb, float* c) {
    constexpr int row_major = 101, no_trans = 111, trans = 112;
    f(row_major, g.trans_a ? trans : no_trans, g.trans_b ? trans : no_trans, int(g.m), int(g.n),
      int(g.k), 1.0f, a, int(lda), b, int(ldb), 0.0f, c, int(g.n));
  };
}

std::vector<Provider> providers() {
  std::vector<Provider> out;
  const auto none = [](int) {};
  // What the library runs in this build (siam::Cpu::gemm): the provider, as siam calls it.
  out.push_back(
      {std::string("siam-") + siam::gemm_provider(),
       [](const GemmCase& g, const float* a, index_t lda, const float* b, index_t ldb, float* c) {
         siam::Cpu::gemm(g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, a, lda, b, ldb, 0.0f, c, g.n);
       },
       none});
#if !defined(EIGEN_USE_BLAS)
  out.push_back(
      {"eigen",
       [](const GemmCase& g, const float* a, index_t lda, const float* b, index_t ldb, float* c) {
         siam::detail::gemm_eigen<float>(g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, a, lda, b, ldb,
                                         0.0f, c, g.n);
       },
       none});
#endif
#if defined(SIAM_BENCH_ONEDNN)
  out.push_back(
      {"onednn",
       [](const GemmCase& g, const float* a, index_t lda, const float* b, index_t ldb, float* c) {
         dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, 1.0f, a, lda, b,
                    ldb, 0.0f, c, g.n);
       },
       none});
#endif
  if (openblas().sgemm) {
    auto set = openblas().symbol<void (*)(int)>("openblas_set_num_threads");
    out.push_back({"openblas", cblas_gemm(openblas()), [set](int n) {
                     if (set) set(n);
                   }});
  }
  if (blis().sgemm) {
    auto set = blis().symbol<void (*)(std::int64_t)>("bli_thread_set_num_threads");
    out.push_back({"blis", cblas_gemm(blis()), [set](int n) {
                     if (set) set(n);
                   }});
  }
  return out;
}

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

void set_threads(const Provider& p, int n) {
  siam::set_num_threads(n);
  p.set_threads(n);
}

void bm_one(benchmark::State& state, const Provider& p, GemmCase g, int threads) {
  Operands o = make_operands(g);
  set_threads(p, threads);
  for (auto _ : state) {
    p.gemm(g, o.a.data(), o.lda, o.b.data(), o.ldb, o.c.data());
    benchmark::DoNotOptimize(o.c.data());
    benchmark::ClobberMemory();
  }
  state.counters["flops"] = benchmark::Counter(flop(g) * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

// Several products in a row (the step's eight, inference's two), each on its own operands.
void bm_group(benchmark::State& state, const Provider& p, bool step, int threads) {
  std::vector<GemmCase> gs;
  std::vector<Operands> ops;
  double total = 0;
  for (const GemmCase& g : cases)
    if (g.step == step) {
      gs.push_back(g);
      ops.push_back(make_operands(g));
      total += flop(g);
    }
  set_threads(p, threads);
  for (auto _ : state) {
    for (std::size_t i = 0; i < gs.size(); ++i)
      p.gemm(gs[i], ops[i].a.data(), ops[i].lda, ops[i].b.data(), ops[i].ldb, ops[i].c.data());
    benchmark::ClobberMemory();
  }
  state.counters["flops"] = benchmark::Counter(total * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

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

std::string shape_name(const GemmCase& g) {
  return std::string(g.name) + "/m:" + std::to_string(g.m) + "/n:" + std::to_string(g.n) +
         "/k:" + std::to_string(g.k);
}

const char* env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "(unset)";
}

void add_context() {
  benchmark::AddCustomContext("siam_gemm_provider", siam::gemm_provider());
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#if defined(SIAM_BENCH_ONEDNN)
  const dnnl_version_t* v = dnnl_version();
  benchmark::AddCustomContext("onednn_version", std::to_string(v->major) + "." +
                                                    std::to_string(v->minor) + "." +
                                                    std::to_string(v->patch) + " (cpu runtime " +
                                                    std::to_string(v->cpu_runtime) + ")");
#endif
  if (openblas().sgemm) {
    static const char* const parallel[] = {"sequential", "pthreads", "openmp"};
    auto core = openblas().symbol<char* (*)()>("openblas_get_corename");
    auto par = openblas().symbol<int (*)()>("openblas_get_parallel");
    const int p = par ? par() : -1;
    benchmark::AddCustomContext("openblas_library", openblas().path);
    benchmark::AddCustomContext("openblas_corename", core ? core() : "?");
    benchmark::AddCustomContext("openblas_threading", p >= 0 && p <= 2 ? parallel[p] : "?");
  }
  if (blis().sgemm) {
    auto init = blis().symbol<void (*)()>("bli_init");
    auto id = blis().symbol<int (*)()>("bli_arch_query_id");
    auto name = blis().symbol<char* (*)(int)>("bli_arch_string");
    if (init) init();  // the architecture can only be queried once BLIS is initialised
    benchmark::AddCustomContext("blis_library", blis().path);
    benchmark::AddCustomContext("blis_arch", id && name ? name(id()) : "?");
  }
  for (const char* v : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "BLIS_ARCH_TYPE",
                        "OMP_NUM_THREADS", "ONEDNN_MAX_CPU_ISA"})
    benchmark::AddCustomContext(std::string("env_") + v, env_or_unset(v));
}

// The machine's FP32 multiply-add ceiling (bench_peak.hpp): GEMM rates are read against it.
void bm_peak_fma(benchmark::State& state, int threads) {
  bench::peak_fma(state, threads);
}

void register_all(const std::vector<Provider>& ps) {
  const auto ms = [](benchmark::internal::Benchmark* b) {
    return b->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  for (int t : bench::thread_counts()) {
    const std::string ts = "/threads:" + std::to_string(t);
    ms(benchmark::RegisterBenchmark(("peak_fma" + ts).c_str(), bm_peak_fma, t));
    for (const Provider& p : ps) {
      ms(benchmark::RegisterBenchmark(("step8_" + p.name + ts).c_str(), bm_group, std::cref(p),
                                      true, t));
      ms(benchmark::RegisterBenchmark(("infer2_" + p.name + ts).c_str(), bm_group, std::cref(p),
                                      false, t));
    }
    for (const GemmCase& g : cases)
      for (const Provider& p : ps)
        ms(benchmark::RegisterBenchmark(("gemm_" + p.name + "/" + shape_name(g) + ts).c_str(),
                                        bm_one, std::cref(p), g, t));
    for (const GemmCase& g : cases)
      if (g.step)
        ms(benchmark::RegisterBenchmark(("gemm_naive/" + shape_name(g) + ts).c_str(),
                                        [](benchmark::State& state, GemmCase gc, int threads) {
                                          Operands o = make_operands(gc);
                                          siam::set_num_threads(threads);
                                          for (auto _ : state) {
                                            naive_gemm(gc, o.a.data(), o.lda, o.b.data(), o.ldb,
                                                       o.c.data());
                                            benchmark::ClobberMemory();
                                          }
                                          state.counters["flops"] = benchmark::Counter(
                                              flop(gc) * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
                                        },
                                        g, t)
               ->Iterations(1));
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  static const std::vector<Provider> ps = providers();
  add_context();
  register_all(ps);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

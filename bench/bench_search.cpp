// Exact and approximate search, read against the machine's FMA ceiling in the same run.
//   peak_fma/threads:T       the FP32 FMA ceiling (bench_peak.hpp)
//   exact_gemm_only          the blocked distance GEMMs of the search alone, same blocks
//   exact_knn                search::knn, k = SIAM_BENCH_K (default 10): GEMMs + selection
//   hnsw_build, hnsw_ef:E    HNSW (when built with siam::hnsw): build (M = SIAM_BENCH_M,
//                            ef_construction = SIAM_BENCH_EFC; 16 and 200 by default), then
//                            search at each ef of SIAM_BENCH_EFS (default 16,32,64,128,256)
//                            with recall@k against the exact result
//   accuracy_all_vs_all      search::accuracy (P@1, R-precision, MAP@R, Recall@1,2,4,8) of
//                            SIAM_BENCH_ACC_N (default 60,000) x SIAM_BENCH_DIM embeddings
//                            against each other, in SIAM_BENCH_ACC_CLASSES (default 10) equal
//                            Gaussian classes (unit-normal centres, standard deviation 1):
//                            run it alone under /usr/bin/time -v for its peak memory
// Data: the gallery and queries from SIAM_BENCH_DATA (files gallery.f32 and queries.f32,
// row-major float32 with SIAM_BENCH_DIM columns, as bench/compare_search.sh writes them),
// else Gaussian vectors of SIAM_BENCH_N x SIAM_BENCH_DIM and SIAM_BENCH_NQ queries. With
// SIAM_BENCH_CLUSTERS = C the generated gallery and queries are drawn around C unit-normal
// centres with standard deviation 0.5. Threads: OMP_NUM_THREADS. The exact indices are
// written to $SIAM_BENCH_DATA/siam_I.i64 when a data folder is given.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench_peak.hpp"
#include "siam/search/accuracy.hpp"
#include "siam/search/exact.hpp"
#if defined(SIAM_BENCH_HNSW)
#include "siam/search/hnsw.hpp"
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using siam::index_t;
namespace search = siam::search;

index_t env(const char* name, index_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoll(v) : fallback;
}

std::vector<float> read_f32(const std::string& path, index_t dim, index_t& rows) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error("cannot read " + path);
  const auto bytes = static_cast<index_t>(f.tellg());
  rows = bytes / (4 * dim);
  std::vector<float> v(static_cast<std::size_t>(rows * dim));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

struct Data {
  index_t dim = 64, n = 0, nq = 0, k = 10;
  std::vector<float> gallery, queries;
  search::Result exact;  // filled by exact_knn (or on first need)
};

Data& data() {
  static Data d = [] {
    Data x;
    x.dim = env("SIAM_BENCH_DIM", 64);
    x.k = env("SIAM_BENCH_K", 10);
    if (const char* dir = std::getenv("SIAM_BENCH_DATA")) {
      x.gallery = read_f32(std::string(dir) + "/gallery.f32", x.dim, x.n);
      x.queries = read_f32(std::string(dir) + "/queries.f32", x.dim, x.nq);
      return x;
    }
    x.n = env("SIAM_BENCH_N", 100000);
    x.nq = env("SIAM_BENCH_NQ", 1000);
    const index_t clusters = env("SIAM_BENCH_CLUSTERS", 0);
    std::mt19937 rng(7);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> centres(static_cast<std::size_t>(std::max<index_t>(clusters, 1) * x.dim));
    for (auto& c : centres)
      c = g(rng);
    auto fill = [&](std::vector<float>& v, index_t rows) {
      v.resize(static_cast<std::size_t>(rows * x.dim));
      for (index_t i = 0; i < rows; ++i) {
        const index_t c =
            clusters > 0 ? static_cast<index_t>(rng() % static_cast<unsigned>(clusters)) : 0;
        for (index_t j = 0; j < x.dim; ++j) {
          const float e = g(rng);
          v[static_cast<std::size_t>(i * x.dim + j)] =
              clusters > 0 ? centres[static_cast<std::size_t>(c * x.dim + j)] + 0.5f * e : e;
        }
      }
    };
    fill(x.gallery, x.n);
    fill(x.queries, x.nq);
    return x;
  }();
  return d;
}

int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void bm_peak(benchmark::State& state) {
  bench::peak_fma(state, threads());
}

// The distance GEMMs exactly as knn blocks them (128 queries x 1024 gallery rows, gallery
// block outer, one contiguous query range per thread), without the selection.
void bm_gemm_only(benchmark::State& state) {
  auto& d = data();
  const int t = threads();
  constexpr index_t qb = 128, gb = 1024;
  for (auto _ : state) {
    SIAM_OMP(parallel num_threads(t)) {
      int me = 0;
#if defined(_OPENMP)
      me = omp_get_thread_num();
#endif
      const index_t q0 = d.nq * me / t, q1 = d.nq * (me + 1) / t;
      std::vector<float> tile(static_cast<std::size_t>(qb * gb));
      for (index_t g0 = 0; g0 < d.n; g0 += gb) {
        const index_t nb = std::min(gb, d.n - g0);
        for (index_t a = q0; a < q1; a += qb) {
          const index_t mb = std::min(qb, q1 - a);
          siam::detail::gemm<float>(false, true, mb, nb, d.dim, -2.0f, d.queries.data() + a * d.dim,
                                    d.dim, d.gallery.data() + g0 * d.dim, d.dim, 0.0f, tile.data(),
                                    nb);
        }
      }
      benchmark::DoNotOptimize(tile.data());
    }
  }
  state.counters["flops"] = benchmark::Counter(
      2.0 * static_cast<double>(d.nq) * static_cast<double>(d.n) * static_cast<double>(d.dim),
      benchmark::Counter::kIsIterationInvariantRate);
}

void bm_knn(benchmark::State& state) {
  auto& d = data();
  for (auto _ : state) {
    d.exact = search::knn({d.queries.data(), d.nq, d.dim}, {d.gallery.data(), d.n, d.dim}, d.k);
    benchmark::DoNotOptimize(d.exact.indices.data());
  }
  state.counters["flops"] = benchmark::Counter(
      2.0 * static_cast<double>(d.nq) * static_cast<double>(d.n) * static_cast<double>(d.dim),
      benchmark::Counter::kIsIterationInvariantRate);
  state.counters["queries/s"] =
      benchmark::Counter(static_cast<double>(d.nq), benchmark::Counter::kIsIterationInvariantRate);
  if (const char* dir = std::getenv("SIAM_BENCH_DATA")) {
    std::ofstream f(std::string(dir) + "/siam_I.i64", std::ios::binary);
    f.write(reinterpret_cast<const char*>(d.exact.indices.data()),
            static_cast<std::streamsize>(d.exact.indices.size() * 8));
  }
}

// The metrics all against all: blocked search with k = the largest R of a chunk of queries.
void bm_accuracy(benchmark::State& state) {
  const index_t n = env("SIAM_BENCH_ACC_N", 60000), dim = env("SIAM_BENCH_DIM", 64);
  const index_t classes = env("SIAM_BENCH_ACC_CLASSES", 10);
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> centres(static_cast<std::size_t>(classes * dim));
  for (auto& c : centres)
    c = g(rng);
  std::vector<float> emb(static_cast<std::size_t>(n * dim));
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const index_t c = i % classes;
    labels[static_cast<std::size_t>(i)] = c;
    for (index_t j = 0; j < dim; ++j)
      emb[static_cast<std::size_t>(i * dim + j)] =
          centres[static_cast<std::size_t>(c * dim + j)] + g(rng);
  }
  search::Accuracy acc;
  for (auto _ : state)
    acc = search::accuracy({emb.data(), n, dim}, labels.data());
  state.counters["P@1"] = acc.precision_at_1;
  state.counters["R-precision"] = acc.r_precision;
  state.counters["MAP@R"] = acc.map_at_r;
  state.counters["flops"] = benchmark::Counter(
      2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(dim),
      benchmark::Counter::kIsIterationInvariantRate);
}

#if defined(SIAM_BENCH_HNSW)
std::unique_ptr<search::HnswIndex>& hnsw() {
  static std::unique_ptr<search::HnswIndex> h;
  return h;
}

// SIAM_BENCH_M and SIAM_BENCH_EFC: the graph's links per node and build candidate list
// (default HnswParams: 16 and 200).
search::HnswParams hnsw_params() {
  search::HnswParams p;
  p.M = env("SIAM_BENCH_M", p.M);
  p.ef_construction = env("SIAM_BENCH_EFC", p.ef_construction);
  return p;
}

void bm_hnsw_build(benchmark::State& state) {
  auto& d = data();
  for (auto _ : state) {
    hnsw() = std::make_unique<search::HnswIndex>(d.dim, search::Metric::l2, d.n, hnsw_params());
    hnsw()->add({d.gallery.data(), d.n, d.dim});
  }
  // Bytes per row in hnswlib's graph: the vector, 2M bottom links, label, list headers.
  state.counters["bytes/row"] = static_cast<double>(d.dim * 4 + 2 * hnsw_params().M * 4 + 4 + 8);
  state.counters["M"] = static_cast<double>(hnsw_params().M);
  state.counters["ef_construction"] = static_cast<double>(hnsw_params().ef_construction);
}

void bm_hnsw_search(benchmark::State& state) {
  auto& d = data();
  if (!hnsw() || d.exact.indices.empty()) {
    state.SkipWithError("needs exact_knn and hnsw_build first");
    return;
  }
  search::Result r;
  for (auto _ : state)
    r = hnsw()->search({d.queries.data(), d.nq, d.dim}, d.k, state.range(0));
  double hits = 0;
  for (index_t q = 0; q < d.nq; ++q) {
    std::set<std::int64_t> truth;
    for (index_t j = 0; j < d.k; ++j)
      truth.insert(d.exact.index(q, j));
    for (index_t j = 0; j < d.k; ++j)
      hits += truth.count(r.index(q, j)) ? 1 : 0;
  }
  state.counters["recall"] = hits / static_cast<double>(d.nq * d.k);
  state.counters["queries/s"] =
      benchmark::Counter(static_cast<double>(d.nq), benchmark::Counter::kIsIterationInvariantRate);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const std::string t = "/threads:" + std::to_string(threads());
  benchmark::RegisterBenchmark(("peak_fma" + t).c_str(), bm_peak)->UseRealTime();
  benchmark::RegisterBenchmark(("exact_gemm_only" + t).c_str(), bm_gemm_only)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
  benchmark::RegisterBenchmark(("exact_knn" + t).c_str(), bm_knn)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
  benchmark::RegisterBenchmark(("accuracy_all_vs_all" + t).c_str(), bm_accuracy)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
#if defined(SIAM_BENCH_HNSW)
  benchmark::RegisterBenchmark(("hnsw_build" + t).c_str(), bm_hnsw_build)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
  std::vector<index_t> efs{16, 32, 64, 128, 256};  // SIAM_BENCH_EFS: a comma-separated list
  if (const char* list = std::getenv("SIAM_BENCH_EFS")) {
    efs.clear();
    for (const char* p = list; *p;) {
      char* end = nullptr;
      const long long ef = std::strtoll(p, &end, 10);
      if (end == p) break;  // not a number: the list ends
      efs.push_back(ef);
      p = *end == ',' ? end + 1 : end;
    }
  }
  for (const index_t ef : efs)
    benchmark::RegisterBenchmark(("hnsw_search" + t).c_str(), bm_hnsw_search)
        ->Arg(ef)
        ->ArgName("ef")
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The machine's FP32 multiply-add ceiling, shared by the benchmarks that read their rates
// against it (bench_gemm, bench_conv): independent chains of FMAs on the widest vectors the
// compiler targets (-march=native), 12 accumulators per thread so the FMA latency is
// hidden, nothing read from memory. Counter "flops" is a rate.
#pragma once

#include <benchmark/benchmark.h>

namespace bench {

using v16 = float __attribute__((vector_size(64)));
inline void peak_fma(benchmark::State& state, int threads) {
  constexpr int acc = 12;
  constexpr long inner = 1 << 16;
  double flops = 0;
  for (auto _ : state) {
    float sink = 0;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(+ : sink)
#endif
    {
      v16 x[acc], a, b;
      for (int i = 0; i < 16; ++i) {
        a[i] = 0.999f;
        b[i] = 0.001f;
      }
      for (int j = 0; j < acc; ++j)
        x[j] = a * float(j + 1);
      for (long k = 0; k < inner; ++k)
        for (int j = 0; j < acc; ++j)
          x[j] = x[j] * a + b;
      for (int j = 0; j < acc; ++j)
        sink += x[j][0];
    }
    benchmark::DoNotOptimize(sink);
    flops += 2.0 * 16 * acc * inner * threads;
  }
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
}

}  // namespace bench

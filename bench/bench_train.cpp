// The example's training step and test-set embedding, each timed side by side with
// the GEMMs it contains (same shapes, same backend, same threads), alternating inside
// one benchmark loop so that machine noise hits both alike. Reports the ratio and the
// heap allocations (operator new) per steady-state step.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <siam/data/synthetic_digits.hpp>
#include <siam/siamese.hpp>
#include <siam/train/siamese_trainer.hpp>
#include <string>
#include <vector>

#include "../tests/support/alloc_counter.hpp"
#include "bench_peak.hpp"
#include "step_gemms.hpp"

namespace {
using namespace siam;
using Tf = Tensor<float, Cpu>;
using Clock = std::chrono::steady_clock;

const data::Dataset& digits() {
  static const data::Dataset d = data::synthetic_digits(5000, 1);
  return d;
}

void BM_TrainStep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  SiameseConfig cfg;
  cfg.check_finite = state.range(1) != 0;
  SiameseTrainer<float, Cpu> trainer(digits(), cfg);
  bench::StepGemms<Cpu> gemms(2 * static_cast<index_t>(cfg.batch_pairs));
  for (int i = 0; i < 5; ++i) {  // reach the steady state: every buffer exists
    trainer.step();
    gemms.run();
  }
  double step_s = 0, gemm_s = 0;
  long news = 0;
  for (auto _ : state) {
    const long before = alloc_counter::count.load();
    const auto t0 = Clock::now();
    benchmark::DoNotOptimize(trainer.step());
    const auto t1 = Clock::now();
    news += alloc_counter::count.load() - before;
    gemms.run();
    const auto t2 = Clock::now();
    const double s = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(s);
    step_s += s;
    gemm_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["step_ms"] = 1e3 * step_s / n;
  state.counters["gemm_ms"] = 1e3 * gemm_s / n;
  state.counters["step_over_gemm"] = step_s / gemm_s;
  state.counters["gemm_GFLOPs"] = bench::StepGemms<Cpu>::flops(gemms.n) * n / gemm_s / 1e9;
  state.counters["allocs_per_step"] = static_cast<double>(news) / n;
}
// The machine's FP32 FMA ceiling in the same run, for the GEMMs' share of it.
void BM_PeakFma(benchmark::State& state) {
  bench::peak_fma(state, static_cast<int>(state.range(0)));
}
BENCHMARK(BM_PeakFma)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime();

// The machine's memory bandwidth on 2 threads in the same run (a = b + s c over 3 x 30 MB,
// far beyond the caches): what Adam's pass over the weights and both moments is bound by.
void BM_StreamTriad(benchmark::State& state) {
  set_num_threads(2);
  const index_t n = index_t{1} << 23;
  Tf a(Shape{n}), b(Shape{n}), c(Shape{n});
  b.fill(1.0f);
  c.fill(2.0f);
  for (auto _ : state) {
    a = b + c * 0.5f;
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
  }
  state.counters["GBps"] = benchmark::Counter(3.0 * 4.0 * double(n) * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StreamTriad)->UseRealTime()->Unit(benchmark::kMillisecond);

// Where the step's time goes beyond its GEMMs, phase by phase in the step's own order (so
// each phase finds the caches as the step leaves them): drawing and gathering the batch,
// forward and backward (GEMMs plus the elementwise passes and the loss), the NaN/Inf probe,
// Adam; then the eight GEMMs alone. Medians of the iterations' phase times, 2 threads.
void BM_StepPhases(benchmark::State& state) {
  set_num_threads(2);
  SiameseTrainer<float, Cpu> trainer(digits(), SiameseConfig{});
  auto& t = trainer.trainer();
  bench::StepGemms<Cpu> gemms(2 * static_cast<index_t>(SiameseConfig{}.batch_pairs));
  for (int i = 0; i < 5; ++i) {
    trainer.step();
    gemms.run();
  }
  Batch<float, Cpu>& batch = const_cast<Batch<float, Cpu>&>(t.last_batch());
  std::vector<double> ph[6];
  for (auto _ : state) {
    const auto t0 = Clock::now();
    t.source().next(batch);
    const auto t1 = Clock::now();
    benchmark::DoNotOptimize(t.forward_backward(batch));
    const auto t2 = Clock::now();
    t.check_finite();
    const auto t3 = Clock::now();
    trainer.optimizer().step();
    const auto t4 = Clock::now();
    gemms.run();
    const auto t5 = Clock::now();
    const Clock::time_point at[6] = {t0, t1, t2, t3, t4, t5};
    for (int p = 0; p < 5; ++p)
      ph[p].push_back(std::chrono::duration<double, std::milli>(at[p + 1] - at[p]).count());
    ph[5].push_back(std::chrono::duration<double, std::milli>(t4 - t0).count());
    state.SetIterationTime(std::chrono::duration<double>(t4 - t0).count());
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  const char* names[6] = {"batch_ms", "fwd_bwd_ms", "probe_ms", "adam_ms", "gemm_ms", "step_ms"};
  for (int p = 0; p < 6; ++p)
    state.counters[names[p]] = median(ph[p]);
  state.counters["step_over_gemm"] = median(ph[5]) / median(ph[4]);
  double params = 0;
  for (auto* p : trainer.network().parameters())
    params += static_cast<double>(p->value.size());
  // Adam reads weights, gradients and both moments and writes three back: 7 floats each.
  state.counters["adam_GBps"] = 7.0 * 4.0 * params / (median(ph[3]) * 1e-3) / 1e9;
}
BENCHMARK(BM_StepPhases)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

// args: threads, finite checks on/off
BENCHMARK(BM_TrainStep)
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->ArgNames({"threads", "check_finite"})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

void BM_Embed5000(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  SiameseTrainer<float, Cpu> trainer(digits(), SiameseConfig{});
  const index_t batch = 1000;
  bench::StepGemms<Cpu> gemms(batch);
  double emb_s = 0, gemm_s = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    benchmark::DoNotOptimize(trainer.embed(digits(), batch));
    const auto t1 = Clock::now();
    for (int c = 0; c < 5; ++c) {  // the three forward products of each chunk
      gemms.h1 = matmul(gemms.x, gemms.w1);
      gemms.h2 = matmul(gemms.h1, gemms.w2);
      gemms.f = matmul(gemms.h2, gemms.w3);
    }
    const auto t2 = Clock::now();
    const double s = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(s);
    emb_s += s;
    gemm_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["embed_ms"] = 1e3 * emb_s / n;
  state.counters["gemm_ms"] = 1e3 * gemm_s / n;
  state.counters["embed_over_gemm"] = emb_s / gemm_s;
  state.counters["gemm_GFLOPs"] = 18.53e9 * n / gemm_s / 1e9;
}
BENCHMARK(BM_Embed5000)
    ->Arg(2)
    ->ArgName("threads")
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

// The step over batch size and hidden width (both hidden layers), for bench/sweep.py,
// which runs each point against PyTorch. Registered only with SIAM_BENCH_SWEEP=1 (the
// largest points take seconds per step). No finite checks, as in compare.sh.
void BM_StepSweep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(2)));
  SiameseConfig cfg;
  cfg.check_finite = false;
  cfg.batch_pairs = static_cast<std::size_t>(state.range(0));
  const index_t h = state.range(1);
  cfg.layers = {784, h, h, 2};
  SiameseTrainer<float, Cpu> trainer(digits(), cfg);
  for (int i = 0; i < 2; ++i)
    trainer.step();
  for (auto _ : state) {
    const auto t0 = Clock::now();
    benchmark::DoNotOptimize(trainer.step());
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("siam_gemm_provider", siam::gemm_provider());
  if (const char* sweep = std::getenv("SIAM_BENCH_SWEEP"); sweep && std::string(sweep) == "1")
    benchmark::RegisterBenchmark("BM_StepSweep", BM_StepSweep)
        ->ArgsProduct({{16, 64, 180, 512, 2048}, {256, 1024, 4096}, {1, 2}})
        ->ArgNames({"pairs", "hidden", "threads"})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The example's training step and test-set embedding, each timed side by side with
// the GEMMs it contains (same shapes, same backend, same threads), alternating inside
// one benchmark loop so that machine noise hits both alike. Reports the ratio and the
// heap allocations (operator new) per steady-state step.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <siam/data/synthetic_digits.hpp>
#include <siam/siamese.hpp>
#include <siam/train.hpp>
#include <string>

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

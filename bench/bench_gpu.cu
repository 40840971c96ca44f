// GPU benchmarks: cuBLAS GEMM on the example's shapes (FP32, no TF32), the training
// step of the example on the CUDA backend, eager or as one CUDA graph, in each GEMM precision,
// against its GEMMs alone (with the pool's peak and steady-state memory),
// embedding 5000 images, the host cost of a pool allocation and of a staged upload. Timed
// with CUDA events around many queued iterations; without a device it says so and exits 0.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <siam/backend/cuda.hpp>
#if defined(SIAM_HAS_CUDNN)
#include <siam/backend/cudnn.hpp>  // the LeNet rows
#endif
#include <siam/data/synthetic_digits.hpp>
#include <siam/presets/lenet.hpp>
#include <siam/train/siamese_trainer.hpp>

#include "step_gemms.hpp"

namespace {
using namespace siam;
using Tg = Tensor<float, Cuda>;

struct GemmShape {
  const char* name;
  index_t m, n, k;
  bool ta, tb;
};
// The products of one training step and of inference (row-major: C[m x n] = op(A) op(B)).
constexpr GemmShape shapes[] = {
    {"fwd_X_W1", 360, 1024, 784, false, false},
    {"fwd_H1_W2", 360, 1024, 1024, false, false},
    {"fwd_H2_W3", 360, 2, 1024, false, false},
    {"dgrad_dZ2_W2T", 360, 1024, 1024, false, true},
    {"dgrad_dZ3_W3T", 360, 1024, 2, false, true},
    {"wgrad_XT_dZ1", 784, 1024, 360, true, false},
    {"wgrad_H1T_dZ2", 1024, 1024, 360, true, false},
    {"wgrad_H2T_dZ3", 1024, 2, 360, true, false},
    {"infer_X_W1", 5000, 1024, 784, false, false},
    {"infer_H1_W2", 5000, 1024, 1024, false, false},
};

void BM_CublasGemm(benchmark::State& state) {
  const GemmShape& s = shapes[state.range(0)];
  Tg a(s.ta ? Shape{s.k, s.m} : Shape{s.m, s.k}), b(s.tb ? Shape{s.n, s.k} : Shape{s.k, s.n}),
      c(Shape{s.m, s.n});
  a.fill(0.5f);
  b.fill(0.25f);
  const int reps = 50;
  c = matmul(a, b, s.ta, s.tb);  // warm-up: cuBLAS picks its kernel and loads it once
  cuda::synchronize();
  cuda::Event start(true), stop(true);
  for (auto _ : state) {
    start.record(cuda::stream());
    for (int i = 0; i < reps; ++i)
      c = matmul(a, b, s.ta, s.tb);
    stop.record(cuda::stream());
    stop.synchronize();
    state.SetIterationTime(stop.elapsed_ms(start) / 1e3 / reps);
  }
  state.SetLabel(s.name);
  state.counters["GFLOPs"] =
      benchmark::Counter(2.0 * s.m * s.n * s.k * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CublasGemm)
    ->DenseRange(0, 9)
    ->UseManualTime()
    ->Iterations(20)
    ->Unit(benchmark::kMicrosecond);

const data::Dataset& digits() {
  static const data::Dataset d = data::synthetic_digits(5000, 1);
  return d;
}

// The example's step: args check_finite (0/1), graph (0 eager, 1 one CUDA graph per step),
// the FP32 GEMM precision (0 highest, 1 high = TF32, 2 medium = BF16) and the network (0 the
// MLP 784-1024-1024-2, 1 LeNet as --arch cnn). Each iteration times 100 queued steps, then (MLP)
// the step's eight GEMMs alone 100 times (bench/step_gemms.hpp): the step / GEMMs ratio comes
// from one run. 20 iterations, 3 repetitions: compare the medians.
void BM_GpuTrainStep(benchmark::State& state) {
  struct Reset {
    ~Reset() { cuda::set_matmul_precision(cuda::MatmulPrecision::highest); }
  } reset;
  cuda::set_matmul_precision(static_cast<cuda::MatmulPrecision>(state.range(2)));
  SiameseConfig cfg;
  cfg.check_finite = state.range(0) != 0;
  cfg.graph = state.range(1) != 0;
  const bool lenet = state.range(3) != 0;
  if (lenet) {
    cfg.network = presets::lenet_specs();
    cfg.input_shape = Shape{1, 28, 28};
  }
  SiameseTrainer<float, Cuda> trainer(digits(), cfg);
  bench::StepGemms<Cuda> gemms(2 * static_cast<index_t>(cfg.batch_pairs));
  const int gemm_reps = lenet ? 0 : 100;  // the eight GEMMs are the MLP's
  for (int i = 0; i < 10; ++i) {
    trainer.step();
    if (!lenet) gemms.run();
  }
  const int reps = 100;
  cuda::Event start(true), stop(true), gemm_stop(true);
  std::uint64_t launches = 0;
  double gemm_s = 0, step_s = 0;
  const cuda::PoolStats warm = cuda::pool_stats();
  for (auto _ : state) {
    const auto l0 = detail::kernels::launch_count();
    start.record(cuda::stream());
    for (int i = 0; i < reps; ++i)
      trainer.step_async();
    stop.record(cuda::stream());
    stop.synchronize();
    launches += detail::kernels::launch_count() - l0;
    for (int i = 0; i < gemm_reps; ++i)
      gemms.run();
    gemm_stop.record(cuda::stream());
    gemm_stop.synchronize();
    const double s = stop.elapsed_ms(start) / 1e3 / reps;
    step_s += s;
    if (gemm_reps > 0) gemm_s += gemm_stop.elapsed_ms(stop) / 1e3 / gemm_reps;
    state.SetIterationTime(s);
  }
  trainer.trainer().check_replayed();
  const double its = static_cast<double>(state.iterations());
  state.counters["step_ms"] = 1e3 * step_s / its;
  state.counters["gemm_ms"] = 1e3 * gemm_s / its;
  state.counters["step_over_gemm"] = gemm_s > 0 ? step_s / gemm_s : 0.0;
  state.counters["launches_per_step"] = static_cast<double>(launches) / (its * reps);
  state.counters["graph_nodes"] = static_cast<double>(trainer.trainer().graph_nodes());
  // Memory: steady state means the pool's reservation did not grow while timing.
  const cuda::PoolStats end = cuda::pool_stats();
  const double steps = its * reps;
  state.counters["reservation_growths"] =
      static_cast<double>(end.cuda_malloc_calls - warm.cuda_malloc_calls);
  state.counters["allocs_per_step"] =
      static_cast<double>(end.allocations - warm.allocations) / steps;
  state.counters["peak_in_use_MiB"] = static_cast<double>(end.peak_bytes_in_use) / (1 << 20);
  state.counters["reserved_MiB"] = static_cast<double>(end.bytes_reserved) / (1 << 20);
  state.counters["peak_reserved_MiB"] = static_cast<double>(end.peak_bytes_reserved) / (1 << 20);
}
// Every row of eager/graph x FP32/TF32/BF16 x probe off/on for the MLP; LeNet eager and graph
// in each precision with the probe on (the example's default).
BENCHMARK(BM_GpuTrainStep)
    ->ArgsProduct({{0, 1}, {0, 1}, {0, 1, 2}, {0}})
#if defined(SIAM_HAS_CUDNN)
    ->ArgsProduct({{1}, {0, 1}, {0, 1, 2}, {1}})
#endif
    ->ArgNames({"check_finite", "graph", "precision", "lenet"})
    ->UseManualTime()
    ->Iterations(20)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true)
    ->Unit(benchmark::kMillisecond);

void BM_GpuEmbed5000(benchmark::State& state) {
  SiameseTrainer<float, Cuda> trainer(digits(), SiameseConfig{});
  for (auto _ : state)
    benchmark::DoNotOptimize(trainer.embed(digits(), 5000));
}
BENCHMARK(BM_GpuEmbed5000)->Iterations(10)->Unit(benchmark::kMillisecond);

// Host cost of one allocate + deallocate pair (cudaMallocFromPoolAsync + cudaFreeAsync
// with the pool's bookkeeping), at the step's typical sizes; the device work is nil.
void BM_PoolAllocFree(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  cuda::deallocate(cuda::allocate(bytes), bytes);  // warm: the pool holds the memory
  for (auto _ : state)
    cuda::deallocate(cuda::allocate(bytes), bytes);
  cuda::synchronize();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolAllocFree)
    ->Arg(4 << 10)
    ->Arg(1440 << 10)
    ->Arg(32 << 20)
    ->Unit(benchmark::kNanosecond);

// Host cost of Cuda::from_host through the pinned staging ring at the step's per-step
// upload sizes (pair indices, labels), against a plain cudaMemcpyAsync from pageable memory.
void BM_UploadStaged(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> host(n, 1.f);
  cuda::DeviceBuffer<float> dev(n);
  for (auto _ : state)
    Cuda::from_host(dev.data(), host.data(), static_cast<index_t>(n));
  cuda::synchronize();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
}
void BM_UploadPageable(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> host(n, 1.f);
  cuda::DeviceBuffer<float> dev(n);
  for (auto _ : state)
    SIAM_CUDA_CHECK(cudaMemcpyAsync(dev.data(), host.data(), n * sizeof(float),
                                    cudaMemcpyHostToDevice, cuda::stream()));
  cuda::synchronize();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
}
BENCHMARK(BM_UploadStaged)->Arg(180)->Arg(360)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_UploadPageable)->Arg(180)->Arg(360)->Arg(1 << 20)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::device_available()) {
    std::printf("no CUDA device: GPU benchmarks not run\n");
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, cuda::current_device());
  benchmark::AddCustomContext("gpu", prop.name);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

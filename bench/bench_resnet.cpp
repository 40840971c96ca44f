// The ResNet Siamese training step of `mnist_siamese --arch resnet` on the CPU (nn::resnet:
// width 32, 64-D L2-normalised embedding, [1 x 28 x 28] inputs):
//   resnet_step/<engine>/threads:N   forward on a stacked batch of BATCH images (PAIRS pairs,
//                                    SIAM_BENCH_PAIRS, default 180 as the example), stacked
//                                    contrastive loss (margin 0.3, sum), backward, Adam(1e-4);
//                                    "allocs" = heap allocations per steady step,
//                                    "faults" = minor page faults per step
//   resnet_embed/<engine>/threads:N  inference (net.embed) on the same batch
//   resnet_fused/<op>/<fused|unfused>/threads:N
//                                    one of the step's fused ops at the first stage's shape
//                                    ([BATCH x 32 x 28 x 28]) against its two ops: forward,
//                                    a projection to a scalar (sum of y * r), backward.
//                                    <op>: bn_relu (batch_norm_relu against
//                                    relu(batch_norm)), add_relu (against relu(a + b))
// CPU time is the whole process's (every thread). <engine> is im2col (always) and onednn (when
// built with SIAM_DNNL). bench/compare_resnet.sh runs the step next to bench/pytorch_resnet.py.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdlib>
#include <siam/data/synthetic_digits.hpp>
#include <siam/siamese.hpp>
#include <string>
#include <vector>

#include "../tests/support/alloc_counter.hpp"
#include "bench_common.hpp"

#if defined(SIAM_HAS_DNNL)
#include <siam/backend/conv_dnnl.hpp>
#endif

namespace {
using namespace siam;
using Tf = Tensor<float, Cpu>;

// Minor page faults of the process so far (first touches of fresh memory).
long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

index_t pairs() {
  const char* e = std::getenv("SIAM_BENCH_PAIRS");
  const long v = e ? std::strtol(e, nullptr, 10) : 0;
  return v > 0 ? index_t(v) : 180;
}

void bm_step(benchmark::State& state, ConvEngine engine, int threads, bool train) {
  set_num_threads(threads);
  set_conv_engine(engine);
  const index_t batch = 2 * pairs();
  const data::Dataset digits = data::synthetic_digits(batch, 1);
  Rng rng(0);
  auto net = nn::resnet<float, Cpu>(Shape{1, 28, 28}, rng, 32, 64);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-4, 0.9, 0.99, 1e-8});
  const Tf x = Tf::from(Shape{batch, 1, 28, 28}, std::span<const float>(digits.images));
  std::vector<float> lab(static_cast<std::size_t>(batch / 2));
  for (std::size_t i = 0; i < lab.size(); ++i)
    lab[i] = float(i % 2);
  const Tf labels = Tf::from(Shape{batch / 2}, std::span<const float>(lab));
  Tape<float, Cpu> tape;
  auto step = [&] {
    if (!train) {
      benchmark::DoNotOptimize(net.embed(x).data());
      return;
    }
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(x));
    auto loss = contrastive_loss_stacked(f, tape.constant(labels), {0.3, Reduction::sum, false});
    tape.backward(loss);
    adam.step();
  };
  step();
  step();
  const long before = alloc_counter::count.load();
  const long faults_before = minor_faults();
  long steps = 0;
  for (auto _ : state) {
    step();
    ++steps;
  }
  state.counters["allocs"] = double(alloc_counter::count.load() - before) / double(steps);
  state.counters["faults"] = double(minor_faults() - faults_before) / double(steps);
  state.SetItemsProcessed(state.iterations() * batch);
}

// One fused op of the step, or the two ops it replaces (see the top of the file).
void bm_fused(benchmark::State& state, bool bn, bool fused, int threads) {
  set_num_threads(threads);
  const Shape shape{2 * pairs(), 32, 28, 28};
  Rng rng(1);
  auto random = [&](Shape s) {
    Tf t(s);
    for (index_t i = 0; i < t.size(); ++i)
      t[i] = static_cast<float>(rng.uniform(-1, 1));
    return t;
  };
  Parameter<float, Cpu> a("a", random(shape)), b("b", random(shape));
  Parameter<float, Cpu> gamma("gamma", Tf::from(Shape{32}, std::vector<float>(32, 1.f)));
  Parameter<float, Cpu> beta("beta", Tf(Shape{32}));
  const Tf r = random(shape);
  Tape<float, Cpu> tape;
  auto step = [&] {
    tape.reset();
    for (auto* p : {&a, &b, &gamma, &beta})
      p->zero_grad();
    const auto x = tape.param(a);
    Var<float, Cpu> y;
    if (bn) {
      const auto g = tape.param(gamma), be = tape.param(beta);
      y = fused ? batch_norm_relu(x, g, be) : relu(batch_norm(x, g, be));
    } else {
      const auto z = tape.param(b);
      y = fused ? add_relu(x, z) : relu(x + z);
    }
    tape.backward(sum(y * tape.constant(r)));
  };
  step();
  step();
  for (auto _ : state)
    step();
  state.SetItemsProcessed(state.iterations() * shape[0]);
}

void register_all() {
  std::vector<std::pair<ConvEngine, std::string>> engines{{ConvEngine::im2col, "im2col"}};
#if defined(SIAM_HAS_DNNL)
  engines.push_back({ConvEngine::onednn, "onednn"});
#endif
  for (int t : bench::thread_counts())
    for (const auto& [e, en] : engines)
      for (bool train : {true, false})
        benchmark::RegisterBenchmark(
            ((train ? "resnet_step/" : "resnet_embed/") + en + "/threads:" + std::to_string(t))
                .c_str(),
            bm_step, e, t, train)
            ->UseRealTime()
            ->MeasureProcessCPUTime()
            ->Unit(benchmark::kMillisecond);
  for (int t : bench::thread_counts())
    for (const auto& [bn, op] : {std::pair{true, "bn_relu"}, std::pair{false, "add_relu"}})
      for (bool fused : {true, false})
        benchmark::RegisterBenchmark(
            ("resnet_fused/" + std::string(op) + (fused ? "/fused" : "/unfused") +
             "/threads:" + std::to_string(t))
                .c_str(),
            bm_fused, bn, fused, t)
            ->UseRealTime()
            ->MeasureProcessCPUTime()
            ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

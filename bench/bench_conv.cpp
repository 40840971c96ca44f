// Convolutional Siamese network (Caffe's mnist_siamese LeNet, 2-D output) on the CPU:
//   peak_fma/threads:N                   the machine's FP32 FMA ceiling, in this same run
//   layer/<engine>/<layer>_<pass>/...    GFLOP/s ("flops", a rate) of each layer's forward
//                                        and backward on the example's shapes: a stacked
//                                        batch of 360 images (180 pairs)
//   step/<engine>/threads:N              one whole training step: LeNet forward on the
//                                        stacked batch, contrastive loss (margin 0.3),
//                                        backward, Adam; "allocs" = heap allocations per step
// <engine> is im2col (always) and onednn (when built with SIAM_DNNL). conv1's backward
// computes only the weight and bias gradients (its input is data); conv2's also the input
// gradient. Dense layers run through Cpu::gemm, as in the network.
#include <benchmark/benchmark.h>

#include <siam/data/synthetic_digits.hpp>
#include <siam/siamese.hpp>
#include <string>
#include <vector>

#include "../tests/support/alloc_counter.hpp"
#include "bench_common.hpp"
#include "bench_peak.hpp"

#if defined(SIAM_HAS_DNNL)
#include <siam/backend/conv_dnnl.hpp>
#endif

namespace {
using namespace siam;
using Tf = Tensor<float, Cpu>;
constexpr index_t batch = 360;

Tf filled(Shape s, float v) {
  Tf t(s);
  t.fill(v);
  return t;
}

struct ConvCase {
  const char* name;
  detail::ConvGeometry g;
  bool input_grad;
};
const ConvCase conv_cases[] = {
    {"conv1", {batch, 1, 28, 28, 20, 5, 5, 1, 0, 24, 24}, false},
    {"conv2", {batch, 20, 12, 12, 50, 5, 5, 1, 0, 8, 8}, true},
};

void bm_conv(benchmark::State& state, ConvCase cc, ConvEngine engine, bool backward, int threads) {
  set_num_threads(threads);
  set_conv_engine(engine);
  const auto& g = cc.g;
  using D = detail::ConvDispatch<float, Cpu>;
  Tf x = filled(Shape{g.n, g.c, g.h, g.w}, 0.5f), w = filled(Shape{g.o, g.c, g.kh, g.kw}, 0.01f),
     b = filled(Shape{g.o}, 0.1f), y(g.out_shape()), dy = filled(g.out_shape(), 0.1f),
     dx(x.shape()), dw(w.shape()), db(b.shape()), work(Shape{D::workspace(g)});
  const double mac = double(g.n) * g.o * g.pixels() * g.patch();
  const double per = backward ? (cc.input_grad ? 4 : 2) * mac : 2 * mac;
  double flops = 0;
  for (auto _ : state) {
    if (backward)
      D::backward(g, x.data(), w.data(), dy.data(), cc.input_grad ? dx.data() : nullptr, false,
                  dw.data(), false, db.data(), false, work.data());
    else
      D::forward(g, x.data(), w.data(), b.data(), y.data(), work.data());
    benchmark::ClobberMemory();
    flops += per;
  }
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
}

// Dense(in -> out) on the stacked batch: forward y = x W; backward dW = x^T dy, dx = dy W^T.
void bm_dense(benchmark::State& state, index_t in, index_t out, bool backward, int threads) {
  set_num_threads(threads);
  Tf x = filled(Shape{batch, in}, 0.5f), w = filled(Shape{in, out}, 0.01f), y(Shape{batch, out}),
     dy = filled(Shape{batch, out}, 0.1f), dw(w.shape()), dx(x.shape());
  double flops = 0;
  for (auto _ : state) {
    if (backward) {
      Cpu::gemm(true, false, in, out, batch, 1.f, x.data(), in, dy.data(), out, 0.f, dw.data(),
                out);
      Cpu::gemm(false, true, batch, in, out, 1.f, dy.data(), out, w.data(), out, 0.f, dx.data(),
                in);
    } else {
      Cpu::gemm(false, false, batch, out, in, 1.f, x.data(), in, w.data(), out, 0.f, y.data(), out);
    }
    benchmark::ClobberMemory();
    flops += (backward ? 4.0 : 2.0) * batch * in * out;
  }
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
}

// One LeNet Siamese training step on a fixed stacked batch of synthetic digits.
void bm_step(benchmark::State& state, ConvEngine engine, int threads) {
  set_num_threads(threads);
  set_conv_engine(engine);
  static const data::Dataset digits = data::synthetic_digits(batch, 1);
  Rng rng(0);
  auto net = nn::lenet<float, Cpu>(rng);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-4, 0.9, 0.99, 1e-8});
  const Tf x = Tf::from(Shape{batch, 784}, std::span<const float>(digits.images));
  std::vector<float> lab(batch / 2);
  for (std::size_t i = 0; i < lab.size(); ++i)
    lab[i] = float(i % 2);
  const Tf labels = Tf::from(Shape{batch / 2}, std::span<const float>(lab));
  Tape<float, Cpu> tape;
  auto step = [&] {
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
  long steps = 0;
  for (auto _ : state) {
    step();
    ++steps;
  }
  state.counters["allocs"] = double(alloc_counter::count.load() - before) / double(steps);
}

std::vector<std::pair<ConvEngine, std::string>> engines() {
  std::vector<std::pair<ConvEngine, std::string>> e{{ConvEngine::im2col, "im2col"}};
#if defined(SIAM_HAS_DNNL)
  e.push_back({ConvEngine::onednn, "onednn"});
#endif
  return e;
}

void register_all() {
  for (int t : bench::thread_counts()) {
    const std::string th = "/threads:" + std::to_string(t);
    benchmark::RegisterBenchmark(("peak_fma" + th).c_str(), bench::peak_fma, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    for (const auto& [e, en] : engines())
      for (const ConvCase& c : conv_cases)
        for (bool bwd : {false, true})
          benchmark::RegisterBenchmark(
              ("layer/" + en + "/" + c.name + (bwd ? "_backward" : "_forward") + th).c_str(),
              bm_conv, c, e, bwd, t)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
    for (bool bwd : {false, true}) {
      benchmark::RegisterBenchmark(
          ("layer/gemm/dense1_" + std::string(bwd ? "backward" : "forward") + th).c_str(), bm_dense,
          800, 500, bwd, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(
          ("layer/gemm/dense2_" + std::string(bwd ? "backward" : "forward") + th).c_str(), bm_dense,
          500, 2, bwd, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (const auto& [e, en] : engines())
      benchmark::RegisterBenchmark(("step/" + en + th).c_str(), bm_step, e, t)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("conv_engines", engines().size() > 1 ? "im2col,onednn" : "im2col");
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

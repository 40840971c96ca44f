// The optimizers' fused steps and gradient clipping next to the hand-written loops they
// replace, over the 1.86 M parameters of the example's 784-1024-1024-2 network. Names:
// <case>/expr/threads:N (the library) and <case>/loop/threads:N (the loop); to_table.py
// reports loop_time / expr_time (1.0 = as fast as the loop). N: 1 and all hardware
// threads, or the list in SIAM_BENCH_THREADS.
//
// Fairness as in bench_expr.cpp: the same flags, the same arithmetic with the constants
// hoisted as the library hoists them, the plain OpenMP pragma over each parameter, and
// main() checks that both sides agree before timing (on two instances). When timed, both
// sides of a case work on the same buffers (the loop on the optimizer's own state), so
// neither gains from where its memory landed; the gradients are fixed.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "siam/siamese.hpp"

namespace {

using siam::index_t;
using siam::Shape;
using Mat = siam::Tensor<float, siam::Cpu>;
using Param = siam::Parameter<float, siam::Cpu>;

constexpr index_t shapes[][2] = {{784, 1024}, {1, 1024}, {1024, 1024},
                                 {1, 1024},   {1024, 2}, {1, 2}};

Mat random_tensor(Shape s, std::uint64_t seed, double lo, double hi) {
  siam::Rng rng(seed);
  Mat t = Mat::uninitialized(s);
  for (index_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<float>(rng.uniform(lo, hi));
  return t;
}

// Parameters with fixed gradients.
struct Net {
  std::vector<Param> params;
  index_t count = 0;
  Net() {
    std::uint64_t seed = 10;
    for (const auto& s : shapes) {
      const Shape shape = s[0] == 1 ? Shape{s[1]} : Shape{s[0], s[1]};
      params.emplace_back("p", random_tensor(shape, seed++, -1, 1));
      params.back().grad = random_tensor(shape, seed++, -1e-2, 1e-2);
      params.back().grad_fresh = false;
      count += shape.size();
    }
  }
  std::vector<Param*> pointers() {
    std::vector<Param*> out;
    for (auto& p : params)
      out.push_back(&p);
    return out;
  }
};

// ---- SGD with Nesterov momentum and weight decay (the heaviest SGD variant)

constexpr siam::optim::SGDOptions sgd_opt{1e-2, 0.9, 0, 1e-4, true};

struct SgdCase {
  Net net;
  siam::optim::SGD<float, siam::Cpu> sgd{net.pointers(), sgd_opt};
  long long t = 0;
  void expr() { sgd.step(); }
  void loop() {
    const float lr = float(sgd_opt.lr), wd = float(sgd_opt.weight_decay),
                mu = float(sgd_opt.momentum), keep = float(1 - sgd_opt.dampening);
    const bool first = t++ == 0;
    for (std::size_t k = 0; k < net.params.size(); ++k) {
      float* p = net.params[k].value.data();
      const float* g = net.params[k].grad.data();
      float* b = sgd.momentum_buffers()[k].data();
      const index_t n = net.params[k].value.size();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= 32768)
#endif
      for (index_t i = 0; i < n; ++i) {
        const float d = g[i] + wd * p[i];
        b[i] = first ? d : mu * b[i] + keep * d;
        p[i] = p[i] - lr * (d + mu * b[i]);
      }
    }
  }
  const float* out() const {
    return net.params[0].value.data();
  }
  double items() const {
    return double(net.count);
  }
};

// ---- AdamW

constexpr siam::optim::AdamWOptions adamw_opt{1e-4, 0.9, 0.99, 1e-8, 1e-2};

struct AdamWCase {
  Net net;
  siam::optim::AdamW<float, siam::Cpu> adamw{net.pointers(), adamw_opt};
  long long t = 0;
  void expr() { adamw.step(); }
  void loop() {
    ++t;
    const double c1 = 1 - std::pow(adamw_opt.beta1, double(t));
    const double c2 = 1 - std::pow(adamw_opt.beta2, double(t));
    const float b1 = float(adamw_opt.beta1), b2 = float(adamw_opt.beta2), lr = float(adamw_opt.lr),
                eps = float(adamw_opt.eps), ic1 = float(1 / c1), ic2 = float(1 / c2),
                decay = float(1 - adamw_opt.lr * adamw_opt.weight_decay);
    for (std::size_t k = 0; k < net.params.size(); ++k) {
      float* p = net.params[k].value.data();
      const float* g = net.params[k].grad.data();
      float* m = adamw.first_moments()[k].data();
      float* v = adamw.second_moments()[k].data();
      const index_t n = net.params[k].value.size();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= 32768)
#endif
      for (index_t i = 0; i < n; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * (g[i] * g[i]);
        p[i] = p[i] * decay - lr * (m[i] * ic1) / (std::sqrt(v[i] * ic2) + eps);
      }
    }
  }
  const float* out() const {
    return net.params[0].value.data();
  }
  double items() const {
    return double(net.count);
  }
};

// ---- clipping by global norm. Timed with max_norm = inf, i.e. the reduction (every
// gradient's squares into one scalar, one read): a timed scale pass would shrink the
// gradients run after run. The scale pass is a fused batch like the optimizers' steps
// above; main() checks its result once.

struct ClipCase {
  Net net;
  siam::optim::ClipWorkspace<float, siam::Cpu> ws;
  double norm = 0, max_norm = HUGE_VAL;
  void expr() { norm = siam::optim::clip_grad_norm(net.pointers(), max_norm, ws); }
  void loop() {
    double total = 0;
    for (auto& p : net.params) {
      const float* g = p.grad.data();
      const index_t n = p.grad.size();
      float acc = 0;
#ifdef _OPENMP
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n >= 32768)
#endif
      for (index_t i = 0; i < n; ++i)
        acc += g[i] * g[i];
      total += acc;
    }
    norm = std::sqrt(total);
    const double coef = max_norm / (norm + 1e-6);
    if (coef >= 1) return;
    const float c = float(coef);
    for (auto& p : net.params) {
      float* g = p.grad.data();
      const index_t n = p.grad.size();
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= 32768)
#endif
      for (index_t i = 0; i < n; ++i)
        g[i] *= c;
    }
  }
  const float* out() const {
    return net.params[0].grad.data();
  }
  double items() const {
    return double(net.count);
  }
};

template <class Case>
Case& instance() {
  static Case c;
  return c;
}

template <class Case, bool Expr>
void run(benchmark::State& state, int threads) {
  siam::set_num_threads(threads);
  Case& c = instance<Case>();
  for (auto _ : state) {
    if constexpr (Expr)
      c.expr();
    else
      c.loop();
    benchmark::DoNotOptimize(c.out());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(c.items() * double(state.iterations())));
}

template <class Case>
void register_pair(const char* name, int threads) {
  const std::string t = "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark((std::string(name) + "/expr" + t).c_str(), run<Case, true>, threads)
      ->UseRealTime();
  benchmark::RegisterBenchmark((std::string(name) + "/loop" + t).c_str(), run<Case, false>, threads)
      ->UseRealTime();
}

// ---- both sides must compute the same thing

double max_rel_diff(const Net& a, const Net& b, bool grads) {
  double worst = 0;
  for (std::size_t k = 0; k < a.params.size(); ++k) {
    const Mat& x = grads ? a.params[k].grad : a.params[k].value;
    const Mat& y = grads ? b.params[k].grad : b.params[k].value;
    for (index_t i = 0; i < x.size(); ++i)
      worst = std::max(
          worst, std::abs(double(x[i]) - double(y[i])) / std::max(1e-6, std::abs(double(y[i]))));
  }
  return worst;
}

bool verify() {
  bool ok = true;
  auto report = [&](const char* what, double err, double tol) {
    std::printf("verify %-10s max rel diff %.2e (tolerance %.0e) %s\n", what, err, tol,
                err <= tol ? "ok" : "MISMATCH");
    ok = ok && err <= tol;
  };
  {
    SgdCase a, b;
    for (int i = 0; i < 3; ++i) {
      a.expr();
      b.loop();
    }
    report("sgd", max_rel_diff(a.net, b.net, false), 1e-4);  // FMA contraction may differ
  }
  {
    AdamWCase a, b;
    for (int i = 0; i < 3; ++i) {
      a.expr();
      b.loop();
    }
    report("adamw", max_rel_diff(a.net, b.net, false), 1e-4);
  }
  {
    ClipCase a, b;
    double exact = 0;  // in double, one term at a time
    for (const auto& p : a.net.params)
      for (index_t i = 0; i < p.grad.size(); ++i)
        exact += double(p.grad[i]) * double(p.grad[i]);
    exact = std::sqrt(exact);
    a.expr();
    b.loop();
    report("clip norm", std::abs(a.norm - exact) / exact, 1e-5);  // float sums, other orders
    report("loop norm", std::abs(b.norm - exact) / exact, 1e-5);
    a.max_norm = b.max_norm = 0.5 * exact;  // and once with the scale pass
    a.expr();
    b.loop();
    report("clip grads", max_rel_diff(a.net, b.net, true), 1e-5);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("omp_max_threads", std::to_string(siam::num_threads()));
  if (!verify()) return 1;
  for (int t : bench::thread_counts()) {
    register_pair<SgdCase>("sgd_nesterov_1.86M", t);
    register_pair<AdamWCase>("adamw_1.86M", t);
    register_pair<ClipCase>("clip_1.86M", t);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

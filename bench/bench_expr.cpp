// Each fused library expression next to the hand-written loop it replaces, on the
// shapes of the example's training step. Names: <case>/expr/threads:N (the library)
// and <case>/loop/threads:N (the loop); to_table.py reports loop_time / expr_time
// (1.0 = as fast as the loop; the goal is 0.95 or more). N: 1 and all hardware threads,
// or the list in SIAM_BENCH_THREADS (e.g. "1,2").
//
// Fairness: both sides are compiled in this file with the same flags, work on the same
// buffers, do the same arithmetic (main() checks that they agree before timing; sums
// may be added in a different order), and the loops are split across threads with the
// plain OpenMP pragma one would write. The library runs a loop on one thread below
// 32768 elements; loops on such small data (the contrastive loss) are left serial too.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "siam/siamese.hpp"

namespace {

using siam::index_t;
using siam::Shape;
using Mat = siam::Tensor<float, siam::Cpu>;

constexpr index_t batch = 360;  // 2 x 180 pairs, stacked
constexpr index_t hidden = 1024;
constexpr index_t pairs = 180;
constexpr index_t embedding = 2;

Mat random_tensor(Shape s, std::uint64_t seed, double lo = -1, double hi = 1) {
  siam::Rng rng(seed);
  Mat t = Mat::uninitialized(s);
  for (index_t i = 0; i < t.size(); ++i)
    t[i] = static_cast<float>(rng.uniform(lo, hi));
  return t;
}

void keep(const float* p) {
  benchmark::DoNotOptimize(p);
  benchmark::ClobberMemory();
}

// ---- (a) bias + ReLU forward: h = max(z + 1 b, 0) on [360 x 1024]

struct BiasRelu {
  Mat z = random_tensor(Shape{batch, hidden}, 1);
  Mat b = random_tensor(Shape{hidden}, 2, -0.1, 0.1);
  Mat h = Mat::uninitialized(Shape{batch, hidden});

  void expr() { h = siam::relu(z + siam::broadcast_rows(b, batch)); }
  void loop() {
    const float* zp = z.data();
    const float* bp = b.data();
    float* hp = h.data();
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (index_t r = 0; r < batch; ++r)
      for (index_t c = 0; c < hidden; ++c) {
        const float v = zp[r * hidden + c] + bp[c];
        hp[r * hidden + c] = v > 0 ? v : 0;
      }
  }
  const float* out() const {
    return h.data();
  }
  static constexpr double items = double(batch * hidden);
  static constexpr double bytes = 2.0 * sizeof(float) * items;  // read z, write h
};

// ---- (b) ReLU backward and the bias gradient in one pass:
// dz = dh * [h > 0] (in place over dh, as linear_relu does), db = column sums of dz.
// Re-running it on its own output changes nothing, so every iteration does the same work.

struct ReluBackward {
  Mat h = random_tensor(Shape{batch, hidden}, 3);
  Mat dh = random_tensor(Shape{batch, hidden}, 4);
  Mat db = Mat(Shape{hidden});

  void expr() {
    const auto k = siam::relu_grad(dh, h).kernel();
    siam::Cpu::assign_sum_rows(dh.data(), db.data(), batch, hidden, k, false);
  }
  void loop() {
    const float* hp = h.data();
    float* dp = dh.data();
    float* bp = db.data();
    std::fill(bp, bp + hidden, 0.0f);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(+ : bp[:hidden])
#endif
    for (index_t r = 0; r < batch; ++r)
      for (index_t c = 0; c < hidden; ++c) {
        const float v = hp[r * hidden + c] > 0 ? dp[r * hidden + c] : 0;
        dp[r * hidden + c] = v;
        bp[c] += v;
      }
  }
  const float* out() const {
    return db.data();
  }
  static constexpr double items = double(batch * hidden);
  static constexpr double bytes = 3.0 * sizeof(float) * items;  // read h, dh; write dh
};

// ---- (c) Adam over the 1.86 M parameters of 784-1024-1024-2

constexpr index_t param_shapes[][2] = {{784, 1024}, {1, 1024}, {1024, 1024},
                                       {1, 1024},   {1024, 2}, {1, 2}};

struct AdamCase {
  static constexpr siam::optim::AdamOptions opt{1e-4, 0.9, 0.99, 1e-8};
  std::vector<siam::Parameter<float, siam::Cpu>> params;
  std::vector<Mat> m, v;  // the loop's moments
  siam::optim::Adam<float, siam::Cpu> adam;
  long long t = 0;
  index_t count = 0;

  AdamCase() : params(make_params()), adam(pointers(params), opt) {
    for (auto& p : params) {
      m.emplace_back(p.value.shape());
      v.emplace_back(p.value.shape());
      count += p.value.size();
    }
  }
  static std::vector<siam::Parameter<float, siam::Cpu>> make_params() {
    std::vector<siam::Parameter<float, siam::Cpu>> ps;
    std::uint64_t seed = 10;
    for (const auto& s : param_shapes) {
      const Shape shape = s[0] == 1 ? Shape{s[1]} : Shape{s[0], s[1]};
      ps.emplace_back("p", random_tensor(shape, seed++));
      ps.back().grad = random_tensor(shape, seed++, -1e-2, 1e-2);
      ps.back().grad_fresh = false;
    }
    return ps;
  }
  static std::vector<siam::Parameter<float, siam::Cpu>*> pointers(
      std::vector<siam::Parameter<float, siam::Cpu>>& ps) {
    std::vector<siam::Parameter<float, siam::Cpu>*> out;
    for (auto& p : ps)
      out.push_back(&p);
    return out;
  }

  void expr() { adam.step(); }
  // The plain loop, with the constants hoisted exactly as Adam::step computes them.
  void loop() {
    ++t;
    const double c1 = 1 - std::pow(opt.beta1, static_cast<double>(t));
    const double c2 = 1 - std::pow(opt.beta2, static_cast<double>(t));
    const float b1 = float(opt.beta1), b2 = float(opt.beta2), lr = float(opt.lr);
    const float eps = float(opt.eps), ic1 = float(1 / c1), ic2 = float(1 / c2);
    for (std::size_t k = 0; k < params.size(); ++k) {
      float* p = params[k].value.data();
      const float* g = params[k].grad.data();
      float* mk = m[k].data();
      float* vk = v[k].data();
      const index_t n = params[k].value.size();
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
      for (index_t i = 0; i < n; ++i) {
        mk[i] = b1 * mk[i] + (1 - b1) * g[i];
        vk[i] = b2 * vk[i] + (1 - b2) * (g[i] * g[i]);
        p[i] = p[i] - lr * (mk[i] * ic1) / (std::sqrt(vk[i] * ic2) + eps);
      }
    }
  }
  const float* out() const {
    return params[0].value.data();
  }
  double items() const {
    return double(count);
  }
  double bytes() const {
    return 7.0 * sizeof(float) * items();
  }  // read p g m v, write p m v
};

// ---- (d) contrastive loss forward + backward on a stacked [360 x 2] feature batch
// (rows 0..179 first images, 180..359 second ones, as the trainer runs it), with the
// incoming gradient 1. `expr` runs what the loss op runs, the backend's fused forward
// and backward; `tape` is the whole op on a tape (record, backward, bookkeeping), which
// the loop has no counterpart for and is reported on its own.

struct Contrastive {
  static constexpr float margin = 0.3f, scale = 0.5f;
  siam::Parameter<float, siam::Cpu> f{"f",
                                      random_tensor(Shape{2 * pairs, embedding}, 20, -0.3, 0.3)};
  Mat labels = Mat::uninitialized(Shape{pairs});
  Mat c = Mat::uninitialized(Shape{pairs});
  Mat g = Mat::uninitialized(Shape{2 * pairs, embedding});
  siam::Tape<float, siam::Cpu> tape;
  float loss = 0, one = 1;

  Contrastive() {
    for (index_t i = 0; i < pairs; ++i)
      labels[i] = float(i % 2);  // balanced
  }

  void expr() {
    const float* a = f.value.data();
    siam::Cpu::contrastive_forward(a, a + pairs * embedding, labels.data(), pairs, embedding,
                                   margin, scale, 1e-6f, c.data(), &loss);
    siam::Cpu::contrastive_backward(a, a + pairs * embedding, c.data(), &one, pairs, embedding,
                                    g.data(), false, g.data() + pairs * embedding, false);
  }
  void tape_op() {
    tape.reset();
    f.zero_grad();
    auto l = siam::contrastive_loss_stacked(tape.param(f), tape.constant(labels),
                                            {margin, siam::Reduction::sum, false});
    tape.backward(l);
    loss = l.value().data()[0];
  }
  // d_i = sqrt(|f1_i - f2_i|^2 + 1e-6); loss = 0.5 sum y d^2 + (1 - y) max(m - d, 0)^2;
  // dF1_i = c_i (f1_i - f2_i), dF2_i = -dF1_i with c_i = y - (1 - y) max(m - d, 0) / d.
  void loop() {
    const float* a = f.value.data();
    const float* b = a + pairs * embedding;
    const float* y = labels.data();
    float* da = g.data();
    float* dbp = g.data() + pairs * embedding;
    float total = 0;
    for (index_t i = 0; i < pairs; ++i) {
      float d2 = 0;
      for (index_t j = 0; j < embedding; ++j) {
        const float diff = a[i * embedding + j] - b[i * embedding + j];
        d2 += diff * diff;
      }
      const float d = std::sqrt(d2 + 1e-6f);
      const float hinge = margin - d > 0 ? margin - d : 0;
      total += y[i] * (d * d) + (1 - y[i]) * (hinge * hinge);
      const float ci = y[i] - (1 - y[i]) * hinge / d;
      for (index_t j = 0; j < embedding; ++j) {
        const float gj = ci * (a[i * embedding + j] - b[i * embedding + j]);
        da[i * embedding + j] = gj;
        dbp[i * embedding + j] = -gj;
      }
    }
    loss = 0.5f * total;
  }
  const float* out() const { return &loss; }
  static constexpr double items = double(pairs);
  static constexpr double bytes = 0;
};

// The whole tape op (see above), under its own name.
struct ContrastiveTape : Contrastive {
  void expr() { tape_op(); }
};

// ---- (e) a tiny elementwise assignment, y = a * b + c on [180 x 2]: the fixed cost of
// one library evaluation

struct Tiny {
  Mat a = random_tensor(Shape{pairs, embedding}, 30);
  Mat b = random_tensor(Shape{pairs, embedding}, 31);
  Mat c = random_tensor(Shape{pairs, embedding}, 32);
  Mat y = Mat::uninitialized(Shape{pairs, embedding});

  void expr() { y = a * b + c; }
  void loop() {
    const float* ap = a.data();
    const float* bp = b.data();
    const float* cp = c.data();
    float* yp = y.data();
    for (index_t i = 0; i < pairs * embedding; ++i)
      yp[i] = ap[i] * bp[i] + cp[i];
  }
  const float* out() const { return y.data(); }
  static constexpr double items = double(pairs * embedding);
  static constexpr double bytes = 4.0 * sizeof(float) * items;
};

// ---- registration

template <class Case>
double items_of(const Case& c) {
  if constexpr (requires { c.items(); })
    return c.items();
  else
    return Case::items;
}
template <class Case>
double bytes_of(const Case& c) {
  if constexpr (requires { c.bytes(); })
    return c.bytes();
  else
    return Case::bytes;
}

// One instance per case, shared by its expression and its loop: both sides work on
// the same buffers, so neither gains from where its memory happened to land.
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
    keep(c.out());
  }
  const auto iters = static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(items_of(c) * iters));
  if (bytes_of(c) > 0) state.SetBytesProcessed(static_cast<std::int64_t>(bytes_of(c) * iters));
}

template <class Case>
void register_pair(const char* name, int threads) {
  const std::string t = "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark((std::string(name) + "/expr" + t).c_str(), run<Case, true>, threads)
      ->UseRealTime();
  benchmark::RegisterBenchmark((std::string(name) + "/loop" + t).c_str(), run<Case, false>, threads)
      ->UseRealTime();
}

// ---- both sides must compute the same thing, or the comparison means nothing

double max_rel_diff(const float* a, const float* b, index_t n) {
  double worst = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = std::abs(double(a[i]) - double(b[i])) / std::max(1e-6, std::abs(double(b[i])));
    worst = std::max(worst, d);
  }
  return worst;
}

bool verify() {
  siam::set_num_threads(1);
  bool ok = true;
  auto report = [&](const char* name, double diff, double tol) {
    if (diff > tol) {
      std::fprintf(stderr, "bench_expr: %s: library and loop differ (max rel. diff %g)\n", name,
                   diff);
      ok = false;
    }
  };
  {
    BiasRelu a, b;
    a.expr();
    b.loop();
    report("bias_relu", max_rel_diff(a.h.data(), b.h.data(), a.h.size()), 0);
  }
  {
    ReluBackward a, b;
    a.expr();
    b.loop();
    report("relu_backward dz", max_rel_diff(a.dh.data(), b.dh.data(), a.dh.size()), 0);
    // The two sum the rows in different orders: bound the difference by the column's
    // sum of magnitudes (a column total near zero has no meaningful relative error).
    double worst = 0;
    for (index_t c = 0; c < hidden; ++c) {
      double mag = 0;
      for (index_t r = 0; r < batch; ++r)
        mag += std::abs(double(b.dh.data()[r * hidden + c]));
      worst = std::max(worst, std::abs(double(a.db[c]) - double(b.db[c])) / std::max(1e-6, mag));
    }
    report("relu_backward db", worst, 1e-5);
  }
  {
    AdamCase a, b;
    for (int i = 0; i < 3; ++i) {
      a.expr();
      b.loop();
    }
    for (std::size_t k = 0; k < a.params.size(); ++k)
      report("adam",
             max_rel_diff(a.params[k].value.data(), b.params[k].value.data(),
                          a.params[k].value.size()),
             1e-4);  // the compiler may contract a * b + c into FMAs differently
  }
  {
    Contrastive a, b;
    ContrastiveTape t;
    a.expr();
    b.loop();
    t.expr();
    report("contrastive loss", max_rel_diff(&a.loss, &b.loss, 1), 1e-5);
    report("contrastive dF", max_rel_diff(a.g.data(), b.g.data(), b.g.size()), 1e-4);
    report("contrastive loss (tape)", max_rel_diff(&t.loss, &b.loss, 1), 1e-5);
    report("contrastive dF (tape)", max_rel_diff(t.f.grad.data(), b.g.data(), b.g.size()), 1e-4);
  }
  {
    Tiny a, b;
    a.expr();
    b.loop();
    report("tiny", max_rel_diff(a.y.data(), b.y.data(), a.y.size()), 1e-6);
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
    register_pair<BiasRelu>("bias_relu", t);
    register_pair<ReluBackward>("relu_backward_db", t);
    register_pair<AdamCase>("adam_1.86M", t);
    register_pair<Contrastive>("contrastive_180x2", t);
    benchmark::RegisterBenchmark(("contrastive_180x2/tape/threads:" + std::to_string(t)).c_str(),
                                 run<ContrastiveTape, true>, t)
        ->UseRealTime();
    register_pair<Tiny>("tiny_axpy_180x2", t);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

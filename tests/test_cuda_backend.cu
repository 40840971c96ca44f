// Tests of the CUDA backend (siam::Cuda) beyond op-by-op parity: tensors of more than 2^31
// elements through every elementwise and reduction kernel, the two-level column totals,
// bit-identical training steps, several host threads, and frees that cannot throw. Without a
// GPU every case is skipped and main() exits with 77 (CTest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory_resource>
#include <random>
#include <siam/autodiff/ops.hpp>
#include <siam/backend/cuda.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/loss/mining.hpp>
#include <siam/nn/layers.hpp>
#include <siam/optim/adam.hpp>
#include <siam/search/exact_cuda.hpp>
#include <siam/train/folder_batches.hpp>
#include <siam/train/siamese_trainer.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace siam;
using Tg = Tensor<float, Cuda>;

bool gpu_present() {
  return cuda::device_available();
}

// Under compute-sanitizer (scripts/gpu-check.sh sets SIAM_SANITIZER=1) the tools slow kernels
// down 10-100x: the tests then use fewer steps and threads, and skip the > 2^31 case.
bool under_sanitizer() {
  const char* v = std::getenv("SIAM_SANITIZER");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

#define SKIP_WITHOUT_GPU()                \
  do {                                    \
    if (!gpu_present()) {                 \
      MESSAGE("skipped: no CUDA device"); \
      return;                             \
    }                                     \
  } while (false)

Tg random_tensor(Shape s, std::uint64_t seed, double lo = -1, double hi = 1) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(s.size()));
  for (auto& x : v)
    x = static_cast<float>(rng.uniform(lo, hi));
  return Tg::from(s, std::span<const float>(v));
}

// One element of device memory.
float at(const float* p, index_t i) {
  float v = 0;
  cuda::copy_to_host(&v, p + i, 1);
  return v;
}

// The training runs of these tests: a 784-128-64-2 MLP on 300 synthetic digits.
const data::Dataset& small_digits() {
  static const data::Dataset d = data::synthetic_digits(300, 9);
  return d;
}
SiameseConfig small_config() {
  SiameseConfig cfg;
  cfg.layers = {784, 128, 64, 2};
  cfg.batch_pairs = 64;
  return cfg;
}

bool close(double got, double want, double rel) {
  return std::abs(got - want) <= rel * std::max(1.0, std::abs(want));
}

}  // namespace

TEST_CASE("image batches in page-locked memory go to the device by DMA, waited for" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  using siam::Cuda;
  static_assert(siam::detail::PinnedUploads<Cuda>);
  siam::data::LoaderOptions o{1, 2};
  CHECK(siam::detail::loader_options<Cuda>(o, 2).memory == Cuda::pinned_host_memory());
  CHECK(siam::detail::loader_options<Cuda>(o, 2).blocks == 2);
  siam::data::LoaderOptions mine{1, 2};
  mine.memory = std::pmr::new_delete_resource();  // the caller's choice is kept
  CHECK(siam::detail::loader_options<Cuda>(mine, 3).memory == std::pmr::new_delete_resource());
  constexpr std::size_t n = 3 << 20;
  std::pmr::vector<float> batch(n, Cuda::pinned_host_memory());
  cudaPointerAttributes attr{};
  REQUIRE(cudaPointerGetAttributes(&attr, batch.data()) == cudaSuccess);
  CHECK(attr.type == cudaMemoryTypeHost);
  for (std::size_t i = 0; i < n; ++i)
    batch[i] = static_cast<float>(i % 1000) * 0.5f;
  const std::vector<float> want(batch.begin(), batch.end());
  siam::Tensor<float, Cuda> d(siam::Shape{static_cast<siam::index_t>(n)});
  Cuda::from_pinned_host(d.data(), batch.data(), static_cast<siam::index_t>(n));
  Cuda::wait_pinned_uploads();  // only now may the slot change
  std::fill(batch.begin(), batch.end(), -1.0f);
  std::vector<float> got(n);
  Cuda::to_host(got.data(), d.data(), static_cast<siam::index_t>(n));
  CHECK(got == want);
}

TEST_CASE("knn_cuda refuses k above its limit or the gallery before touching a device") {
  std::vector<float> g(200 * 4, 0.5f);
  const siam::search::Rows rows{g.data(), 200, 4};
  CHECK_THROWS_WITH_AS(siam::search::knn_cuda(rows, rows, 129),
                       "search::knn_cuda: k = 129 above 128 (use search::knn)", siam::value_error);
  CHECK_THROWS_AS(siam::search::knn_cuda(rows, rows, 201), siam::value_error);
  CHECK_THROWS_AS(siam::search::knn_cuda(rows, {g.data(), 100, 8}, 5), siam::shape_error);
  g[7] = std::nanf("");
  CHECK_THROWS_AS(siam::search::knn_cuda(rows, rows, 5), siam::numeric_error);
}

TEST_CASE("knn_cuda: the CPU's neighbours, ties by index; both metrics, self excluded" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  namespace search = siam::search;
  // 70,000 gallery rows (two GEMM tiles), 1,500 queries (two query blocks), dim 24, with
  // every 50th gallery row a copy of the one before (exact ties, broken by index).
  const siam::index_t ng = 70000, nq = 1500, dim = 24;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> g(static_cast<std::size_t>(ng * dim)), q(static_cast<std::size_t>(nq * dim));
  for (auto& v : g)
    v = normal(rng);
  for (auto& v : q)
    v = normal(rng);
  for (siam::index_t i = 50; i < ng; i += 50)
    std::copy_n(g.begin() + (i - 1) * dim, dim, g.begin() + i * dim);
  const search::Rows G{g.data(), ng, dim}, Q{q.data(), nq, dim};
  auto agree = [&](const search::Result& cpu, const search::Result& gpu, float scale) {
    REQUIRE(gpu.queries == cpu.queries);
    REQUIRE(gpu.k == cpu.k);
    std::int64_t differ = 0;
    for (siam::index_t i = 0; i < cpu.queries; ++i)
      for (siam::index_t j = 0; j < cpu.k; ++j) {
        CHECK(std::abs(gpu.distance(i, j) - cpu.distance(i, j)) <= 1e-5f * scale);
        if (gpu.index(i, j) == cpu.index(i, j)) continue;
        // only where the CPU's neighbours j and j +- 1 are within rounding of each other
        const float d = cpu.distance(i, j);
        const bool near = (j > 0 && std::abs(cpu.distance(i, j - 1) - d) <= 1e-5f * scale) ||
                          (j + 1 < cpu.k && std::abs(cpu.distance(i, j + 1) - d) <= 1e-5f * scale);
        CHECK(near);
        ++differ;
      }
    CHECK(differ < cpu.queries * cpu.k / 100);
  };
  for (const auto metric : {search::Metric::l2, search::Metric::inner_product}) {
    CAPTURE(search::to_string(metric));
    agree(search::knn(Q, G, 10, metric), search::knn_cuda(Q, G, 10, metric), 100.0f);
  }
  // The queries are gallery rows 100..1599: each one's own row left out; with the copies,
  // row 149's nearest is its copy 150 at distance 0, and 150's is 149.
  search::Options self;
  self.exclude_self = true;
  self.self_offset = 100;
  const search::Rows own{g.data() + 100 * dim, nq, dim};
  const auto cpu = search::knn(own, G, 128, search::Metric::l2, self);
  const auto gpu = search::knn_cuda(own, G, 128, search::Metric::l2, self);
  agree(cpu, gpu, 100.0f);
  CHECK(gpu.index(49, 0) == 150);
  CHECK(gpu.distance(49, 0) <= 1e-4f);  // a copy: zero up to the rounding of the dot product
  CHECK(gpu.index(50, 0) == 149);
  for (siam::index_t i = 0; i < nq; ++i)
    for (siam::index_t j = 0; j < 128; ++j)
      CHECK(gpu.index(i, j) != 100 + i);
}

TEST_CASE("column totals: one and two levels match a double-precision reference" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  // 100000 x 5 takes the two-level path (tall, few column tiles); 300 x 5 the one-level one;
  // 0 x 5 and 1 x 1 are the edge shapes.
  for (const Shape s :
       {Shape{100000, 5}, Shape{300, 5}, Shape{0, 5}, Shape{1, 1}, Shape{5000, 70}}) {
    CAPTURE(s.str());
    const Tg a = random_tensor(s, 3);
    const std::vector<float> h = a.to_vector();
    std::vector<double> want(static_cast<std::size_t>(s.cols()), 0.0);
    for (index_t r = 0; r < s.rows(); ++r)
      for (index_t c = 0; c < s.cols(); ++c)
        want[static_cast<std::size_t>(c)] += h[static_cast<std::size_t>(r * s.cols() + c)];
    Tg totals = sum_rows(a);
    std::vector<float> got = totals.to_vector();
    REQUIRE(got.size() == want.size());
    for (std::size_t c = 0; c < want.size(); ++c)
      CHECK(close(got[c], want[c], 1e-5 * std::sqrt(double(s.rows()) + 1)));
    totals += sum_rows(a);  // accumulate
    got = totals.to_vector();
    for (std::size_t c = 0; c < want.size(); ++c)
      CHECK(close(got[c], 2 * want[c], 1e-5 * std::sqrt(double(s.rows()) + 1)));
    // The fused store-and-total of the bias gradient: dst gets the values, out the totals.
    Tg dst(s), out(Shape{s.cols()});
    Cuda::assign_sum_rows(dst.data(), out.data(), s.rows(), s.cols(), (a * 2.f).kernel(), false);
    const std::vector<float> d = dst.to_vector(), o = out.to_vector();
    bool stored = true;
    for (std::size_t i = 0; i < d.size(); ++i)
      stored = stored && d[i] == 2 * h[i];
    CHECK(stored);
    for (std::size_t c = 0; c < want.size(); ++c)
      CHECK(close(o[c], 2 * want[c], 1e-5 * std::sqrt(double(s.rows()) + 1)));
  }
}

TEST_CASE("more than 2^31 elements through every elementwise and reduction kernel" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  constexpr index_t R = 716'000'000, C = 3, N = R * C;  // 2.148e9 > 2^31 = 2.147e9
  static_assert(N > (index_t{1} << 31));
  if (under_sanitizer()) {
    MESSAGE("skipped under compute-sanitizer: 2^31 elements take hours there");
    return;
  }
  std::size_t free_bytes = 0, total_bytes = 0;
  SIAM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < (std::size_t{40} << 30)) {
    MESSAGE("skipped: needs 40 GiB of free device memory, " << free_bytes << " bytes free");
    return;
  }
  const double rel = 1e-6;
  const index_t probes[] = {0, (index_t{1} << 31) - 1, index_t{1} << 31, N - 1};
  {
    Tg a(Shape{R, C}), b(Shape{R, C}), c(Shape{R, C});  // zero-filled: the assign kernel
    a.fill(1.f);
    // assign
    b = a * 2.f + 1.f;
    for (index_t i : probes)
      CHECK(at(b.data(), i) == 3.f);
    // sum_all (two levels)
    CHECK(close(Tg(sum_all(b)).item(), 3.0 * double(N), rel));
    // sum_rows: column totals, two levels (716 M rows, one column tile)
    const std::vector<float> cols = Tg(sum_rows(b)).to_vector();
    for (float v : cols)
      CHECK(close(v, 3.0 * double(R), rel));
    // sum_cols: row totals, blocks striding over 716 M rows
    Tg rows = sum_cols(b);
    CHECK(at(rows.data(), 0) == 9.f);
    CHECK(at(rows.data(), R - 1) == 9.f);
    CHECK(close(Tg(sum_all(rows)).item(), 9.0 * double(R), rel));
    // assign_sum_rows: values stored past 2^31, totals right
    Tg out(Shape{C});
    Cuda::assign_sum_rows(c.data(), out.data(), R, C, (a * 5.f).kernel(), false);
    for (index_t i : probes)
      CHECK(at(c.data(), i) == 5.f);
    for (float v : out.to_vector())
      CHECK(close(v, 5.0 * double(R), rel));
    // fused: two destinations in one pass
    fused(assign_to(b.view(), a + 1.f), assign_to(c.view(), a * 4.f));
    for (index_t i : probes) {
      CHECK(at(b.data(), i) == 2.f);
      CHECK(at(c.data(), i) == 4.f);
    }
    // fused_batch: two groups of 2^31+ elements in one launch
    auto g0 = fused_group(assign_to(b.view(), a * 7.f));
    auto g1 = fused_group(assign_to(c.view(), a * 8.f));
    const decltype(g0) groups[2] = {g0, g1};
    fused_batch<float, Cuda>(groups, 2);
    for (index_t i : probes) {
      CHECK(at(b.data(), i) == 7.f);
      CHECK(at(c.data(), i) == 8.f);
    }
  }
  {
    // gather_rows: 1024 rows of 2^21 + 1 columns (2^31 + 1024 elements), from 8 source rows
    constexpr index_t W = (index_t{1} << 21) + 1, n = 1024;
    const Tg col = Tg::from(Shape{8, 1}, {0, 1, 2, 3, 4, 5, 6, 7});
    Tg src = broadcast_cols(col, W);
    Tg dst = Tg::uninitialized(Shape{n, W});
    std::vector<std::uint32_t> idx(n);
    for (index_t i = 0; i < n; ++i)
      idx[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>((i * 5) % 8);
    Cuda::gather_rows(dst.data(), src.data(), idx.data(), n, W);
    CHECK(at(dst.data(), 0) == 0.f);
    CHECK(at(dst.data(), n * W - 1) == float((1023 * 5) % 8));
    CHECK(at(dst.data(), (index_t{1} << 31) + 5) == float(((index_t{1} << 31) + 5) / W * 5 % 8));
    double want = 0;
    for (index_t i = 0; i < n; ++i)
      want += double((i * 5) % 8) * double(W);
    CHECK(close(Tg(sum_all(dst)).item(), want, rel));
  }
  cuda::synchronize();
}

TEST_CASE("two runs of the training step give bit-identical weights and losses" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  const auto& digits = small_digits();
  const SiameseConfig cfg = small_config();
  auto run = [&] {
    SiameseTrainer<float, Cuda> trainer(digits, cfg);
    std::vector<double> losses;
    for (int s = 0; s < 25; ++s)
      losses.push_back(trainer.step());
    std::vector<float> weights;
    for (auto* p : trainer.network().parameters()) {
      const auto v = p->value.to_vector();
      weights.insert(weights.end(), v.begin(), v.end());
    }
    return std::pair{losses, weights};
  };
  const auto [l1, w1] = run();
  const auto [l2, w2] = run();
  CHECK(l1 == l2);
  CHECK(w1 == w2);
  CHECK(l1.front() != l1.back());  // it did train
}

TEST_CASE("graph mode: one CUDA graph per step, the eager step's losses, NaN named" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  const auto& digits = small_digits();
  SiameseConfig cfg = small_config();
  cfg.adam.lr = 1e-3;
  SiameseTrainer<float, Cuda> eager(digits, cfg);
  cfg.graph = true;
  SiameseTrainer<float, Cuda> graph(digits, cfg);
  std::vector<double> le, lg;
  for (int s = 0; s < 30; ++s) {
    le.push_back(eager.step());
    lg.push_back(graph.step());
  }
  for (std::size_t i = 0; i < le.size(); ++i) {
    CAPTURE(i);
    CHECK(close(lg[i], le[i], 1e-4));
  }
  CHECK(graph.trainer().graph_captures() == 1);
  CHECK(graph.trainer().graph_nodes() > 10);  // the whole step, not a fragment
  MESSAGE("graph nodes per step: " << graph.trainer().graph_nodes());
  // Launches per replayed step: the batch's uploads and gather, the scalars' upload, the graph.
  const auto before = cuda::launch_count();
  for (int s = 0; s < 10; ++s)
    graph.trainer().step_async();
  graph.trainer().check_replayed();
  const double per_step = double(cuda::launch_count() - before) / 10;
  MESSAGE("launches per replayed step (kernels + cuBLAS calls + graphs): " << per_step);
  CHECK(per_step <= 4);
  // A NaN weight makes the next step's loss NaN: that step is skipped and named.
  auto& w = graph.network().parameters()[0]->value;
  const auto w_before = w.to_vector();
  std::vector<float> bad = w_before;
  bad[0] = NAN;
  Cuda::from_host(w.data(), bad.data(), w.size());  // in place: the graph reads it by address
  const auto it = graph.iteration();
  const std::string named = "iteration " + std::to_string(it + 1);
  CHECK_THROWS_WITH_AS(graph.step(), doctest::Contains(named.c_str()), numeric_error);
  CHECK(graph.iteration() == it);
  CHECK(std::isnan(graph.network().parameters()[0]->value.to_vector()[0]));  // left as it was
}

TEST_CASE("graph mode with the NaN probe: Adam and AdamW capture the whole step, 100 replays" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  for (const char* optimizer : {"adam", "adamw"}) {
    CAPTURE(optimizer);
    SiameseConfig cfg = small_config();
    cfg.optimizer = optimizer;
    cfg.weight_decay = std::string(optimizer) == "adamw" ? 1e-2 : 0;
    cfg.adam.lr = 1e-3;
    cfg.check_finite = true;  // the probe is captured with the step
    SiameseTrainer<float, Cuda> eager(small_digits(), cfg);
    cfg.graph = true;
    SiameseTrainer<float, Cuda> graph(small_digits(), cfg);
    // Two steps before the capture (the warm eager step, then the captured one), then replays.
    std::vector<double> le, lg;
    const int steps = under_sanitizer() ? 12 : 102;
    for (int s = 0; s < steps; ++s) {
      le.push_back(eager.step());
      graph.trainer().step_async();
      if (s % 10 == 9 || s == steps - 1) {
        graph.trainer().check_replayed();
        lg.push_back(graph.last_loss());
        CHECK(close(lg.back(), le.back(), 1e-3));
      }
    }
    CHECK(graph.trainer().graph_captures() == 1);
    CHECK(graph.trainer().graph_nodes() > 10);
    CHECK(graph.iteration() == steps);
    CHECK(le.front() != le.back());  // it trained
    // Pool statistics are readable again after the capture (they are refused during one).
    const cuda::PoolStats st = cuda::pool_stats();
    CHECK(st.bytes_reserved >= st.bytes_in_use);
  }
}

// A source of `rows` x 8 inputs whose row count the test changes between steps.
struct ResizableSource final : BatchSource<float, Cuda> {
  index_t rows = 32;
  Rng rng_{5};
  void next(Batch<float, Cuda>& b) override {
    std::vector<float> v(static_cast<std::size_t>(rows * 8));
    for (auto& x : v)
      x = static_cast<float>(rng_.uniform(-1, 1));
    b.inputs.resize(Shape{rows, 8});
    Cuda::from_host(b.inputs.data(), v.data(), b.inputs.size());
    b.targets.resize(Shape{rows});
    b.targets.fill(1.f);
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "resizable"; }
};

TEST_CASE("graph mode: a smaller batch and a replaced parameter recapture; losses stay eager's" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  struct Run {
    Rng init{3};
    nn::Sequential<float, Cuda> net = nn::mlp<float, Cuda>({8, 16, 2}, init);
    optim::Adam<float, Cuda> opt{net.parameters(), optim::AdamOptions{1e-2, 0.9, 0.99, 1e-8}};
    ResizableSource source;
    Trainer<float, Cuda> trainer;
    explicit Run(bool graph)
        : trainer(
              net, opt, source,
              [](Var<float, Cuda> f, const Batch<float, Cuda>&, Tape<float, Cuda>&) {
                return mean(f * f);
              },
              TrainerOptions{true, 0, std::nullopt, "", graph}) {}
  };
  Run eager(false), graph(true);
  const index_t sizes[] = {32, 32, 32, 32, 16, 16, 16, 16, 32, 32, 32, 32};
  for (std::size_t s = 0; s < std::size(sizes); ++s) {
    CAPTURE(s);
    eager.source.rows = graph.source.rows = sizes[s];
    if (s == 10) {  // replace parameter 0's buffer (a new address): the graph must recapture
      for (Run* r : {&eager, &graph}) {
        auto& p = *r->net.parameters()[0];
        Tensor<float, Cuda> copy(p.value);
        p.value = std::move(copy);
      }
    }
    const double a = eager.trainer.step(), b = graph.trainer.step();
    CHECK(close(b, a, 1e-5));
  }
  // 32 -> 16 keeps the buffer (a shrinking resize): only the shape tells; 16 -> 32; the
  // replaced parameter: four captures (each after one eager warm-up step).
  CHECK(graph.trainer.graph_captures() == 4);
}

TEST_CASE("graph mode with a gathering loss (NT-Xent): indices captured with the step" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  SiameseConfig cfg = small_config();
  cfg.loss = "ntxent";
  cfg.adam.lr = 1e-3;
  SiameseTrainer<float, Cuda> eager(small_digits(), cfg);
  cfg.graph = true;
  SiameseTrainer<float, Cuda> graph(small_digits(), cfg);
  const int steps = under_sanitizer() ? 6 : 40;
  for (int s = 0; s < steps; ++s) {
    CAPTURE(s);
    const double a = eager.step();
    // Overwrite the staging ring between replays: a graph that copied its indices from a ring
    // slot would now read these instead (more than the ring's 4 MiB, so every slot is overwritten).
    std::vector<std::uint32_t> junk((std::size_t{5} << 20) / sizeof(std::uint32_t), 0xffffffffu);
    cuda::DeviceBuffer<std::uint32_t> sink(junk.size());
    cuda::upload(sink.data(), junk.data(), junk.size());
    const double b = graph.step();
    CHECK(close(b, a, 1e-4));
  }
  CHECK(graph.trainer().graph_captures() == 1);
}

TEST_CASE("batch-hard mining on the device picks the host loop's triplets, ties included" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  // 8 classes x 5 images; rows 10 and 11 repeat rows 0 and 1, so some distances tie exactly.
  constexpr index_t P = 8, K = 5, n = P * K, D = 6;
  std::vector<float> e = random_tensor(Shape{n, D}, 21).to_vector();
  for (index_t c = 0; c < D; ++c) {
    e[static_cast<std::size_t>(10 * D + c)] = e[static_cast<std::size_t>(0 * D + c)];
    e[static_cast<std::size_t>(11 * D + c)] = e[static_cast<std::size_t>(1 * D + c)];
  }
  std::vector<std::int64_t> labels(n);
  for (index_t i = 0; i < n; ++i)
    labels[static_cast<std::size_t>(i)] = (i * 3) % P;  // classes interleaved
  for (const bool soft : {false, true}) {
    CAPTURE(soft);
    Tape<float, Cuda> tape;
    const Tg et = Tg::from(Shape{n, D}, std::span<const float>(e));
    Parameter<float, Cuda> ep("e", Tg(et));
    Var<float, Cuda> ev = tape.param(ep);
    MiningOptions opt;
    opt.soft = soft;
    Var<float, Cuda> d = detail::distance_matrix(ev, opt.distance);
    Tg pos(Shape{n, n}), neg(Shape{n, n});
    Cuda::mine_batch_hard<float>(d.value().data(), labels.data(), n, pos.data(), neg.data());
    const std::vector<float> dh = d.value().to_vector(), ph = pos.to_vector(), nh = neg.to_vector();
    double want = 0;
    bool same = true;
    for (index_t a = 0; a < n; ++a) {  // the host loop of loss/mining.hpp
      index_t p = -1, q = -1;
      for (index_t j = 0; j < n; ++j) {
        const float v = dh[static_cast<std::size_t>(a * n + j)];
        if (labels[static_cast<std::size_t>(j)] == labels[static_cast<std::size_t>(a)]) {
          if (j != a && (p < 0 || v > dh[static_cast<std::size_t>(a * n + p)])) p = j;
        } else if (q < 0 || v < dh[static_cast<std::size_t>(a * n + q)]) {
          q = j;
        }
      }
      for (index_t j = 0; j < n; ++j) {
        same = same && ph[static_cast<std::size_t>(a * n + j)] == (j == p ? 1.f : 0.f);
        same = same && nh[static_cast<std::size_t>(a * n + j)] == (j == q ? 1.f : 0.f);
      }
      const double x = double(dh[static_cast<std::size_t>(a * n + p)]) -
                       double(dh[static_cast<std::size_t>(a * n + q)]);
      want += soft ? std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x)))
                   : std::max(x + opt.margin, 0.0);
    }
    CHECK(same);
    // The whole loss through the device path: the host loop's value, and a gradient.
    MiningStats stats;
    Var<float, Cuda> l = batch_hard_triplet_loss(ev, labels, opt, &stats);
    CHECK(close(l.value().to_vector()[0], want / double(n), 1e-5));
    CHECK(stats.anchors == n);
    tape.backward(l);
    double gnorm = 0;
    for (float g : ep.gradient().to_vector())
      gnorm += double(g) * double(g);
    CHECK(gnorm > 0);
  }
  // Errors as on the host: an anchor alone in its class.
  {
    Tape<float, Cuda> tape;
    const Tg x = random_tensor(Shape{3, 2}, 4);
    Var<float, Cuda> xv = tape.constant(x);
    const std::vector<std::int64_t> bad = {0, 0, 1};
    CHECK_THROWS_WITH_AS(batch_hard_triplet_loss(xv, bad), doctest::Contains("anchor 2 (label 1)"),
                         value_error);
    MiningOptions skip;
    skip.skip_invalid_anchors = true;
    CHECK_NOTHROW(batch_hard_triplet_loss(xv, bad, skip));
  }
}

TEST_CASE("matmul precision: highest is FP32; high (TF32) and medium (BF16) within their bounds" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  struct Reset {
    ~Reset() { cuda::set_matmul_precision(cuda::MatmulPrecision::highest); }
  } reset;
  CHECK(cuda::matmul_precision() == cuda::MatmulPrecision::highest);
  const index_t m = 96, n = 80, k = 512;
  const Tg a = random_tensor(Shape{m, k}, 1), b = random_tensor(Shape{k, n}, 2);
  const auto ha = a.to_vector(), hb = b.to_vector();
  std::vector<double> ref(static_cast<std::size_t>(m * n));
  double scale = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double acc = 0, mag = 0;
      for (index_t l = 0; l < k; ++l) {
        const double x = double(ha[std::size_t(i * k + l)]) * double(hb[std::size_t(l * n + j)]);
        acc += x;
        mag += std::abs(x);
      }
      ref[std::size_t(i * n + j)] = acc;
      scale = std::max(scale, mag);
    }
  // Worst error relative to the largest sum of |terms| (the float64 reference). A mode whose
  // inputs are rounded with unit roundoff u has error at most 2u (two inputs) plus FP32
  // accumulation (k * 2^-24), and on these random inputs at least u / 64 (the rounding
  // errors of 512 terms do not all cancel). The bands do not overlap, so a mode that falls
  // back to another fails: FP32 below TF32's floor, TF32 below BF16's, BF16 >= 4x TF32.
  const double acc = double(k) * 0x1p-24;
  auto worst_of = [&](const Tg& c) {
    const auto hc = c.to_vector();
    double e = 0;
    for (std::size_t i = 0; i < hc.size(); ++i)
      e = std::max(e, std::abs(double(hc[i]) - ref[i]) / scale);
    return e;
  };
  auto worst = [&](cuda::MatmulPrecision p) {
    cuda::set_matmul_precision(p);
    Tg c(Shape{m, n});
    c = matmul(a, b);
    return worst_of(c);
  };
  const double u_tf = 0x1p-11, u_bf = 0x1p-8;
  const double e32 = worst(cuda::MatmulPrecision::highest);
  const double etf = worst(cuda::MatmulPrecision::high);
  const double ebf = worst(cuda::MatmulPrecision::medium);
  MESSAGE("relative error FP32 " << e32 << ", TF32 " << etf << ", BF16 " << ebf);
  CHECK(e32 <= acc);
  CHECK(e32 < u_tf / 64);
  CHECK(etf >= u_tf / 64);
  CHECK(etf <= 2 * u_tf + acc);
  CHECK(etf < u_bf / 64);
  CHECK(ebf >= u_bf / 64);
  CHECK(ebf <= 2 * u_bf + acc);
  CHECK(ebf >= 4 * etf);
  // The cuBLASLt path (GEMM with a bias epilogue) honours FP32 and TF32 with the same bands;
  // in BF16 it declines, so the layer falls back to the BF16 GEMM above.
  const Tg zero_bias(Shape{n});
  auto worst_lt = [&](cuda::MatmulPrecision p, bool& ran) {
    cuda::set_matmul_precision(p);
    Tg c(Shape{m, n});
    ran = Cuda::gemm_bias<float>(false, m, n, k, a.data(), k, b.data(), n, zero_bias.data(),
                                 c.data(), n);
    return ran ? worst_of(c) : 0.0;
  };
  bool ran32 = false, rantf = false, ranbf = true;
  const double lt32 = worst_lt(cuda::MatmulPrecision::highest, ran32);
  const double lttf = worst_lt(cuda::MatmulPrecision::high, rantf);
  (void)worst_lt(cuda::MatmulPrecision::medium, ranbf);
  MESSAGE("cuBLASLt relative error FP32 " << lt32 << ", TF32 " << lttf);
  CHECK(ranbf == false);
  if (ran32) {
    CHECK(lt32 <= acc);
    CHECK(lt32 < u_tf / 64);
  }
  if (rantf) {
    CHECK(lttf >= u_tf / 64);
    CHECK(lttf <= 2 * u_tf + acc);
  }
  CHECK(cuda::tf32_enabled() == false);
  cuda::set_tf32(true);
  CHECK(cuda::matmul_precision() == cuda::MatmulPrecision::high);
}

TEST_CASE("several host threads run networks on the backend at once, bit-identically" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  auto run = [](std::uint64_t seed) {
    Rng rng(seed);
    auto net = nn::mlp<float, Cuda>({96, 80, 4}, rng);
    const Tg x = random_tensor(Shape{57, 96}, seed + 1);
    Tape<float, Cuda> tape;
    auto f = net.forward(tape.constant(x));
    auto l = sum(f * f);
    tape.backward(l);
    std::vector<float> out = f.value().to_vector();
    for (auto* p : net.parameters()) {
      const auto g = p->gradient().to_vector();
      out.insert(out.end(), g.begin(), g.end());
    }
    return out;
  };
  const int kThreads = under_sanitizer() ? 2 : 6, kIterations = under_sanitizer() ? 2 : 15;
  std::vector<std::vector<float>> want;
  for (int t = 0; t < kThreads; ++t)
    want.push_back(run(100 + t));
  const int device = cuda::current_device();
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        SIAM_CUDA_CHECK(cudaSetDevice(device));
        for (int it = 0; it < kIterations; ++it)
          if (run(100 + t) != want[static_cast<std::size_t>(t)]) ++mismatches;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "thread %d: %s\n", t, e.what());
        ++failures;
      }
    });
  for (auto& th : threads)
    th.join();
  CHECK(failures.load() == 0);
  CHECK(mismatches.load() == 0);
}

TEST_CASE("Cuda::deallocate never throws: a bad free is counted, not swallowed" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  const std::uint64_t before = cuda::free_error_count();
  float not_ours = 0;
  Cuda::deallocate(&not_ours, 1);
  CHECK(cuda::free_error_count() == before + 1);
  float* p = Cuda::allocate<float>(10);
  Cuda::deallocate(p, 11);  // wrong size: rejected, counted, block kept
  CHECK(cuda::free_error_count() == before + 2);
  Cuda::deallocate(p, 10);
  CHECK(cuda::free_error_count() == before + 2);
  CHECK_THROWS_AS(Cuda::allocate<float>(-1), value_error);
}

int main(int argc, char** argv) {
  doctest::Context runner(argc, argv);
  const int rc = runner.run();
  if (runner.shouldExit() || rc != 0) return rc;
  if (!gpu_present()) {
    std::printf("no CUDA device: GPU backend tests skipped\n");
    return 77;
  }
  return 0;
}

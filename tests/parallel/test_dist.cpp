// Data-parallel helper without MPI: slicing, packing, buckets, the deterministic block sum,
// the handshake and on_root, on the one-process communicator and on a simulated second
// rank (MirrorCommunicator: rank 0 of 2 whose partner holds exactly the same buffers).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "dist_loop.hpp"

using namespace siam;
using siam::disttest::Loop;
using siam::disttest::LoopConfig;

namespace {

// Rank 0 of 2 where rank 1 always contributes the same values as rank 0: a sum doubles,
// a gather repeats. `other_settings` makes rank 1's handshake fingerprint differ.
class MirrorCommunicator final : public parallel::Communicator {
 public:
  bool tamper_fingerprint = false, tamper_count = false;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  int local_rank() const override { return 0; }
  parallel::Memory memory() const override { return parallel::Memory::host; }
  std::string name() const override { return "mirror"; }
  void barrier() override {}
  int reduces = 0;

 protected:
  void do_all_reduce_sum(void* buf, std::size_t n, parallel::DType t) override {
    ++reduces;
    if (t == parallel::DType::f32)
      for (std::size_t i = 0; i < n; ++i)
        static_cast<float*>(buf)[i] *= 2;
    else
      for (std::size_t i = 0; i < n; ++i)
        static_cast<double*>(buf)[i] *= 2;
  }
  void do_broadcast(void*, std::size_t, parallel::DType, int) override {}
  void do_all_gather(const void* in, void* out, std::size_t n, parallel::DType t) override {
    gather(in, out, n * bytes_of(t));
  }
  void do_all_gather_host(const void* in, void* out, std::size_t bytes) override {
    gather(in, out, bytes);
    auto* u = static_cast<std::uint64_t*>(out);
    if (tamper_fingerprint) u[3] ^= 1;
    if (tamper_count) u[5] += 1;
  }
  void do_broadcast_host(void*, std::size_t, int) override {}

 private:
  static void gather(const void* in, void* out, std::size_t bytes) {
    std::memcpy(out, in, bytes);
    std::memcpy(static_cast<char*>(out) + bytes, in, bytes);
  }
};

LoopConfig small() {
  LoopConfig c;
  c.pairs = 24;
  return c;
}

}  // namespace

TEST_CASE("shard: contiguous, in order, sizes differ by at most one, covers everything") {
  for (std::size_t n : {0u, 1u, 7u, 180u})
    for (int parts : {1, 2, 3, 8}) {
      std::size_t next = 0;
      for (int p = 0; p < parts; ++p) {
        const auto r = parallel::shard(n, p, parts);
        CHECK(r.begin == next);
        CHECK(r.size() >= n / static_cast<std::size_t>(parts));
        CHECK(r.size() <= n / static_cast<std::size_t>(parts) + 1);
        next = r.end;
      }
      CHECK(next == n);
    }
  CHECK_THROWS_AS(parallel::shard(10, 2, 2), value_error);
  CHECK_THROWS_AS(parallel::shard(10, -1, 2), value_error);
  CHECK_THROWS_AS(parallel::shard(10, 0, 0), value_error);
}

TEST_CASE("launched_ranks: the launcher's process count from its environment, else 1") {
  // The variables of Open MPI, MPICH/Hydra and PMIx, restored afterwards.
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  std::string saved[3];
  bool had[3];
  for (int i = 0; i < 3; ++i) {
    const char* v = std::getenv(names[i]);
    had[i] = v != nullptr;
    if (v) saved[i] = v;
    unsetenv(names[i]);
  }
  CHECK(siam::parallel::launched_ranks() == 1);
  setenv("PMIX_SIZE", "5", 1);
  CHECK(siam::parallel::launched_ranks() == 5);
  setenv("PMI_SIZE", "4", 1);
  CHECK(siam::parallel::launched_ranks() == 4);
  setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
  CHECK(siam::parallel::launched_ranks() == 3);
  setenv("OMPI_COMM_WORLD_SIZE", "0", 1);
  CHECK(siam::parallel::launched_ranks() == 1);
  setenv("OMPI_COMM_WORLD_SIZE", "many", 1);
  CHECK(siam::parallel::launched_ranks() == 1);
  for (int i = 0; i < 3; ++i)
    if (had[i])
      setenv(names[i], saved[i].c_str(), 1);
    else
      unsetenv(names[i]);
}

TEST_CASE("LocalCommunicator: one rank; gathers copy, sums and broadcasts keep the buffer") {
  parallel::LocalCommunicator c;
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  CHECK(c.local_rank() == 0);
  std::vector<float> v{1, 2, 3}, out(3);
  c.all_reduce_sum(std::span<float>(v));
  c.broadcast(std::span<float>(v));
  CHECK(v == std::vector<float>{1, 2, 3});
  c.all_gather(std::span<const float>(v), std::span<float>(out));
  CHECK(out == v);
  std::vector<float> wrong(4);
  CHECK_THROWS_AS(c.all_gather(std::span<const float>(v), std::span<float>(wrong)), shape_error);
  try {
    c.broadcast(std::span<float>(v), 1);
    FAIL("no throw");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()).find("root 1") != std::string::npos);
  }
}

TEST_CASE("handshake: equal settings pass; a different fingerprint or count names both ranks") {
  MirrorCommunicator c;
  parallel::handshake(c, "same", 4, 100);
  c.tamper_fingerprint = true;
  try {
    parallel::handshake(c, "same", 4, 100);
    FAIL("no throw");
  } catch (const parallel::comm_error& e) {
    const std::string m = e.what();
    CHECK(m.find("settings fingerprint") != std::string::npos);
    CHECK(m.find("on rank 0") != std::string::npos);
    CHECK(m.find("on rank 1") != std::string::npos);
  }
  c.tamper_fingerprint = false;
  c.tamper_count = true;
  try {
    parallel::handshake(c, "same", 4, 100);
    FAIL("no throw");
  } catch (const parallel::comm_error& e) {
    CHECK(std::string(e.what()).find("parameter count 100 on rank 0 differs from 101 on rank 1") !=
          std::string::npos);
  }
}

TEST_CASE("on_root: success passes, a failure is rethrown on the root") {
  parallel::LocalCommunicator c;
  int runs = 0;
  parallel::on_root(c, [&] { ++runs; });
  CHECK(runs == 1);
  CHECK_THROWS_AS(parallel::on_root(c, [] { throw io_error("disk full"); }), io_error);
}

TEST_CASE("DataParallel options: bad block counts are value_errors naming the numbers") {
  MirrorCommunicator c;
  Rng rng(1);
  auto net = nn::mlp<float, Cpu>({3, 2}, rng);
  parallel::DataParallelOptions o;
  o.deterministic = true;
  o.blocks = 1;
  try {
    parallel::DataParallel<float, Cpu> dp(c, net.parameters(), o);
    FAIL("no throw");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()).find("1 deterministic blocks cannot be shared by 2 ranks") !=
          std::string::npos);
  }
  o.blocks = 0;
  CHECK_THROWS_AS((parallel::DataParallel<float, Cpu>(c, net.parameters(), o)), value_error);
}

TEST_CASE("one rank: default and deterministic gradients equal the whole batch's (double)") {
  parallel::LocalCommunicator c;
  LoopConfig a = small(), b = small();
  b.dp.deterministic = true;
  b.dp.blocks = 5;  // uneven blocks of 24 pairs
  Loop<double> whole(c, a), blocks(c, b);
  const double la = whole.gradients_only(), lb = blocks.gradients_only();
  CHECK(std::abs(la - lb) <= 1e-12 * std::abs(la));
  CHECK(la > 0);
  for (std::size_t i = 0; i < whole.parameters().size(); ++i) {
    const auto ga = whole.parameters()[i]->grad.to_vector();
    const auto gb = blocks.parameters()[i]->grad.to_vector();
    REQUIRE(ga.size() == gb.size());
    double scale = 0, diff = 0;
    for (std::size_t k = 0; k < ga.size(); ++k) {
      scale = std::max(scale, std::abs(ga[k]));
      diff = std::max(diff, std::abs(ga[k] - gb[k]));
    }
    CHECK(diff <= 1e-12 * std::max(scale, 1.0));
  }
}

TEST_CASE("the summed gradient matches central differences of the global loss (double)") {
  parallel::LocalCommunicator c;
  LoopConfig cfg = small();
  cfg.dp.deterministic = true;
  cfg.dp.blocks = 3;
  Loop<double> loop(c, cfg);
  loop.gradients_only();
  const double h = 1e-6;
  for (auto* p : loop.parameters()) {
    const auto g = p->grad.to_vector();
    for (index_t k : {index_t{0}, p->value.size() / 2, p->value.size() - 1}) {
      const double x = p->value[k];
      p->value[k] = x + h;
      const double up = loop.gradients_only();
      p->value[k] = x - h;
      const double down = loop.gradients_only();
      p->value[k] = x;
      const double numeric = (up - down) / (2 * h);
      CHECK(std::abs(numeric - g[static_cast<std::size_t>(k)]) <=
            1e-6 * std::max({1.0, std::abs(numeric)}));
    }
  }
}

TEST_CASE("simulated second rank: flat buffer and buckets sum every gradient and the loss") {
  parallel::LocalCommunicator one;
  MirrorCommunicator two;
  LoopConfig cfg = small();
  // Rank 0 of 2 computes pairs [0, 12); the mirror makes the sum twice that slice's.
  Loop<double> ref(one, cfg), flat(two, cfg);
  LoopConfig bucketed = cfg;
  bucketed.dp.bucket_bytes = 1500;  // several buckets for the 20-32-32-3 network
  Loop<double> buckets(two, bucketed);
  CHECK(flat.data_parallel().bucket_count() == 1);
  CHECK(buckets.data_parallel().bucket_count() > 1);
  CHECK(buckets.data_parallel().bucket_count() <= 6);
  const double lf = flat.gradients_only(), lb = buckets.gradients_only();
  CHECK(lf == lb);
  CHECK(lf > 0);
  for (std::size_t i = 0; i < flat.parameters().size(); ++i)
    CHECK(flat.parameters()[i]->grad.to_vector() == buckets.parameters()[i]->grad.to_vector());
  // Exactly twice what one process computes for rank 0's half, pairs [0, 12).
  const double lr = ref.gradients_of_range(0, 12);
  CHECK(lf == 2 * lr);
  for (std::size_t i = 0; i < ref.parameters().size(); ++i) {
    auto g = ref.parameters()[i]->gradient().to_vector();
    for (auto& v : g)
      v *= 2;
    CHECK(flat.parameters()[i]->grad.to_vector() == g);
  }
  CHECK(two.reduces > 0);
}

TEST_CASE("empty global batch: zero gradients and loss, compute is never called") {
  parallel::LocalCommunicator c;
  Rng rng(3);
  auto net = nn::mlp<double, Cpu>({3, 2}, rng);
  parallel::DataParallel<double, Cpu> dp(c, net.parameters());
  Tape<double, Cpu> tape;
  Tensor<double, Cpu> x(Shape{1, 3});
  int calls = 0;
  dp.step(0, [&](std::size_t, std::size_t) {
    ++calls;
    return sum(net.forward(tape.constant(x)));
  });
  CHECK(calls == 0);
  CHECK(dp.loss() == 0);
  for (auto* p : net.parameters())
    for (double g : p->gradient().to_vector())
      CHECK(g == 0);
}

TEST_CASE("a non-scalar loss from compute is a shape_error") {
  parallel::LocalCommunicator c;
  Rng rng(3);
  auto net = nn::mlp<double, Cpu>({3, 2}, rng);
  parallel::DataParallel<double, Cpu> dp(c, net.parameters());
  Tape<double, Cpu> tape;
  Tensor<double, Cpu> x(Shape{1, 3});
  CHECK_THROWS_AS(dp.step(1,
                          [&](std::size_t, std::size_t) {
                            tape.reset();
                            return net.forward(tape.constant(x));  // 1 x 2, not a scalar
                          }),
                  shape_error);
}

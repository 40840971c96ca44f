// dist_train: the data-parallel loop of dist_loop.hpp as a program, for the fault and
// resume tests (tests/parallel/test_dist_cli.sh) and the side-by-side timing against PyTorch
// DDP (bench/compare_ddp.sh). Run under mpirun; prints one line per event, rank 0 only.
//
//   dist_train [--layers 20,32,32,3] [--pairs 48] [--images 400] [--classes 4] [--steps 30]
//              [--deterministic] [--blocks 8] [--bucket-bytes 0] [--timeout S]
//              [--save PATH --save-at K] [--resume PATH] [--out PATH]
//              [--die-at K --die-rank R] [--stop-at K --stop-rank R]
//              [--bench WARMUP] [--dump-data PATH] [--allreduce-only]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "dist_loop.hpp"
#include "siam/parallel/mpi.hpp"

#if defined(_OPENMP)
#include <omp.h>
#else
static int omp_get_max_threads() {
  return 1;
}
#endif

using namespace siam;
using clk = std::chrono::steady_clock;

namespace {

// Forwards every call and adds up the time spent in gradient sums (bench mode).
class TimedCommunicator final : public parallel::Communicator {
 public:
  explicit TimedCommunicator(parallel::Communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  int local_rank() const override { return c_.local_rank(); }
  parallel::Memory memory() const override { return c_.memory(); }
  std::string name() const override { return c_.name(); }
  void barrier() override { c_.barrier(); }
  double seconds = 0;

 protected:
  void do_all_reduce_sum(void* buf, std::size_t n, parallel::DType t) override {
    const auto t0 = clk::now();
    if (t == parallel::DType::f32)
      c_.all_reduce_sum(std::span<float>(static_cast<float*>(buf), n));
    else
      c_.all_reduce_sum(std::span<double>(static_cast<double*>(buf), n));
    seconds += std::chrono::duration<double>(clk::now() - t0).count();
  }
  void do_broadcast(void* buf, std::size_t n, parallel::DType t, int root) override {
    if (t == parallel::DType::f32)
      c_.broadcast(std::span<float>(static_cast<float*>(buf), n), root);
    else
      c_.broadcast(std::span<double>(static_cast<double*>(buf), n), root);
  }
  void do_all_gather(const void* in, void* out, std::size_t n, parallel::DType t) override {
    const auto t0 = clk::now();
    if (t == parallel::DType::f32)
      c_.all_gather(
          std::span<const float>(static_cast<const float*>(in), n),
          std::span<float>(static_cast<float*>(out), n * static_cast<std::size_t>(size())));
    else
      c_.all_gather(
          std::span<const double>(static_cast<const double*>(in), n),
          std::span<double>(static_cast<double*>(out), n * static_cast<std::size_t>(size())));
    seconds += std::chrono::duration<double>(clk::now() - t0).count();
  }
  void do_all_gather_host(const void* in, void* out, std::size_t bytes) override {
    c_.all_gather_host(in, bytes, out);
  }
  void do_broadcast_host(void* buf, std::size_t bytes, int root) override {
    c_.broadcast_host(buf, bytes, root);
  }

 private:
  parallel::Communicator& c_;
};

std::vector<index_t> parse_layers(const std::string& s) {
  std::vector<index_t> v;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ','))
    v.push_back(std::stol(part));
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  parallel::MpiEnvironment mpi(&argc, &argv);
  disttest::LoopConfig cfg;
  int steps = 30, save_at = -1, die_at = -1, die_rank = 1, stop_at = -1, stop_rank = 1;
  int bench = -1;
  bool allreduce_only = false;
  double timeout = -1;
  std::string save, resume, out, dump;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw value_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--layers")
      cfg.layers = parse_layers(next());
    else if (a == "--pairs")
      cfg.pairs = std::stoul(next());
    else if (a == "--images")
      cfg.images = std::stoul(next());
    else if (a == "--classes")
      cfg.classes = std::stoul(next());
    else if (a == "--lr")
      cfg.lr = std::stod(next());
    else if (a == "--steps")
      steps = std::stoi(next());
    else if (a == "--deterministic")
      cfg.dp.deterministic = true;
    else if (a == "--blocks")
      cfg.dp.blocks = std::stoul(next());
    else if (a == "--bucket-bytes")
      cfg.dp.bucket_bytes = std::stoul(next());
    else if (a == "--timeout")
      timeout = std::stod(next());
    else if (a == "--save")
      save = next();
    else if (a == "--save-at")
      save_at = std::stoi(next());
    else if (a == "--resume")
      resume = next();
    else if (a == "--out")
      out = next();
    else if (a == "--die-at")
      die_at = std::stoi(next());
    else if (a == "--die-rank")
      die_rank = std::stoi(next());
    else if (a == "--stop-at")
      stop_at = std::stoi(next());
    else if (a == "--stop-rank")
      stop_rank = std::stoi(next());
    else if (a == "--bench")
      bench = std::stoi(next());
    else if (a == "--dump-data")
      dump = next();
    else if (a == "--allreduce-only")
      allreduce_only = true;
    else
      throw value_error("unknown option " + a);
  }
  parallel::MpiCommunicator world(mpi, MPI_COMM_WORLD, {timeout});
  TimedCommunicator comm(world);
  const bool root = comm.rank() == 0;
  if (!dump.empty()) {  // the data set, for the PyTorch side of the comparison
    parallel::on_root(comm, [&] {
      const auto d = disttest::clusters(cfg.images, static_cast<std::size_t>(cfg.layers.front()),
                                        cfg.classes, cfg.seed + 1);
      std::ofstream f(dump, std::ios::binary);
      f.write(reinterpret_cast<const char*>(d.images.data()),
              static_cast<std::streamsize>(d.images.size() * sizeof(float)));
      f.write(reinterpret_cast<const char*>(d.labels.data()),
              static_cast<std::streamsize>(d.labels.size()));
      if (!f) throw io_error(dump + ": write failed");
    });
    return 0;
  }
  disttest::Loop<float> loop(comm, cfg);
  if (allreduce_only) {  // the gradient sum alone, on a buffer of the network's size
    std::vector<float> buf(loop.data_parallel().parameter_count() + 1, 1.0f);
    std::vector<double> t;
    for (int i = 0; i < 45; ++i) {
      comm.barrier();
      const auto t0 = clk::now();
      world.all_reduce_sum(std::span<float>(buf));
      if (i >= 5) t.push_back(std::chrono::duration<double>(clk::now() - t0).count());
    }
    const double s = median(t), bytes = 4.0 * static_cast<double>(buf.size());
    if (root)
      std::printf(
          "{\"impl\": \"siam-allreduce\", \"ranks\": %d, \"bytes\": %.0f, "
          "\"allreduce_ms\": %.3f, \"bus_GBps\": %.2f, \"timeout_s\": %g}\n",
          comm.size(), bytes, 1e3 * s, 2.0 * (comm.size() - 1) / comm.size() * bytes / s / 1e9,
          world.timeout_seconds());
    return 0;
  }
  if (root)
    std::printf("dist_train: %d ranks (%s), %d OpenMP thread(s) each, %s mode\n", comm.size(),
                world.name().c_str(), omp_get_max_threads(),
                cfg.dp.deterministic ? "deterministic" : "default");
  if (!resume.empty()) {
    loop.load(resume);
    if (root) std::printf("resumed %s at step %lld\n", resume.c_str(), loop.iteration());
  }
  std::vector<double> step_s, comm_s;
  while (loop.iteration() < steps) {
    const long long it = loop.iteration();
    if (it == die_at && comm.rank() == die_rank) raise(SIGKILL);
    if (it == stop_at && comm.rank() == stop_rank)
      for (;;)
        std::this_thread::sleep_for(std::chrono::seconds(1));  // alive, never calls again
    comm.seconds = 0;
    const auto t0 = clk::now();
    const double l = loop.step();
    const double dt = std::chrono::duration<double>(clk::now() - t0).count();
    if (bench >= 0 && it >= bench) {
      step_s.push_back(dt);
      comm_s.push_back(comm.seconds);
    }
    if (root && bench < 0) std::printf("step %lld loss %.9g\n", it + 1, l);
    if (loop.iteration() == save_at && !save.empty()) loop.save(save);
  }
  if (!out.empty())
    parallel::on_root(comm, [&] {
      auto records = io::parameter_records(loop.parameters());
      records.push_back(io::make_record("losses", {static_cast<std::int64_t>(loop.losses().size())},
                                        loop.losses().data(), loop.losses().size()));
      io::save_archive(out, records);
    });
  if (bench >= 0 && root) {
    std::vector<double> share;
    for (std::size_t i = 0; i < step_s.size(); ++i)
      share.push_back(comm_s[i] / step_s[i]);
    std::printf(
        "{\"impl\": \"siam\", \"ranks\": %d, \"threads\": %d, \"steps\": %zu, "
        "\"step_ms\": %.3f, \"allreduce_ms\": %.3f, \"allreduce_share\": %.3f, "
        "\"deterministic\": %d, \"bucket_bytes\": %zu, \"timeout_s\": %g}\n",
        comm.size(), omp_get_max_threads(), step_s.size(), 1e3 * median(step_s),
        1e3 * median(comm_s), median(share), int(cfg.dp.deterministic), cfg.dp.bucket_bytes,
        world.timeout_seconds());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dist_train: error: %s\n", e.what());
  return 1;
}

// The MPI communicator (any MPI-3 library; Debian's Open MPI: libopenmpi-dev). Built only
// when the program links MPI (CMake: SIAM_MPI, find_package(MPI)); never included by the
// umbrella header.
//
//   int main(int argc, char** argv) {
//     siam::parallel::MpiEnvironment mpi(&argc, &argv);   // MPI_Init ... MPI_Finalize
//     siam::parallel::MpiCommunicator comm(mpi);          // a duplicate of MPI_COMM_WORLD
//     ...
//   }
//
// Every collective is started non-blocking and polled against a deadline (options.timeout,
// default 300 s, or the environment variable SIAM_DIST_TIMEOUT in seconds): when another
// rank has died or stopped calling collectives, the waiting rank prints which call timed out
// on which rank and calls MPI_Abort, so the whole job ends with that message instead of
// hanging. (A collective in flight cannot be cancelled in MPI, so abort is the only clean
// exit.) A timeout of 0 uses the plain blocking calls, unbounded.
#pragma once

// The C API only: the deprecated C++ bindings do not compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "siam/parallel/communicator.hpp"

namespace siam::parallel {

namespace detail {
inline std::string mpi_error_string(int rc) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(s, static_cast<std::size_t>(len));
}
}  // namespace detail

/// Owns MPI's initialisation: MPI_Init_thread (FUNNELED) if MPI is not initialised yet, and
/// MPI_Finalize at destruction if this object initialised it. Create one, in main, before
/// any communicator, and let the communicators go first.
class MpiEnvironment {
 public:
  explicit MpiEnvironment(int* argc = nullptr, char*** argv = nullptr) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) return;
    int provided = 0;
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS)
      throw comm_error("MPI_Init_thread failed: " + detail::mpi_error_string(rc));
    owns_ = true;
  }
  ~MpiEnvironment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  /// Rank and size in MPI_COMM_WORLD (before any communicator exists).
  static int world_rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }

 private:
  bool owns_ = false;
};

struct MpiOptions {
  /// Bound on each collective; 0 means unbounded blocking calls. Negative: read
  /// SIAM_DIST_TIMEOUT (seconds) from the environment, else 300 s.
  double timeout_seconds = -1;
};

/// A duplicate of `parent` (MPI_Comm_dup, freed at destruction) with errors returned, not
/// fatal: a failing call throws comm_error naming the call, the rank and MPI's message.
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MpiEnvironment&, MPI_Comm parent = MPI_COMM_WORLD, MpiOptions opt = {}) {
    timeout_ = opt.timeout_seconds;
    if (timeout_ < 0) {
      timeout_ = 300;
      if (const char* e = std::getenv("SIAM_DIST_TIMEOUT")) {
        char* end = nullptr;
        const double v = std::strtod(e, &end);
        if (end == e || *end != '\0' || !(v >= 0))
          throw value_error("SIAM_DIST_TIMEOUT: '" + std::string(e) +
                            "' is not a number of seconds >= 0");
        timeout_ = v;
      }
    }
    check(MPI_Comm_dup(parent, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    MPI_Comm node = MPI_COMM_NULL;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  Memory memory() const override { return Memory::host; }
  std::string name() const override { return "mpi"; }
  double timeout_seconds() const { return timeout_; }
  MPI_Comm handle() const { return comm_; }

  void barrier() override {
    if (timeout_ == 0) return check(MPI_Barrier(comm_), "MPI_Barrier");
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait(req, "MPI_Ibarrier");
  }

  /// Ends every rank of the job (MPI_Abort) after printing `why` with this rank's name.
  [[noreturn]] void abort(const std::string& why) const {
    std::fprintf(stderr, "siam::parallel: %s\n", why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 3);
    std::abort();
  }

 protected:
  void do_all_reduce_sum(void* buf, std::size_t n, DType t) override {
    const int c = count(n, "MPI_Allreduce");
    if (timeout_ == 0)
      return check(MPI_Allreduce(MPI_IN_PLACE, buf, c, type(t), MPI_SUM, comm_), "MPI_Allreduce");
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, buf, c, type(t), MPI_SUM, comm_, &req), "MPI_Iallreduce");
    wait(req, "MPI_Iallreduce");
  }
  void do_broadcast(void* buf, std::size_t n, DType t, int root) override {
    const int c = count(n, "MPI_Bcast");
    if (timeout_ == 0) return check(MPI_Bcast(buf, c, type(t), root, comm_), "MPI_Bcast");
    MPI_Request req;
    check(MPI_Ibcast(buf, c, type(t), root, comm_, &req), "MPI_Ibcast");
    wait(req, "MPI_Ibcast");
  }
  void do_all_gather(const void* in, void* out, std::size_t n, DType t) override {
    const int c = count(n, "MPI_Allgather");
    if (timeout_ == 0)
      return check(MPI_Allgather(in, c, type(t), out, c, type(t), comm_), "MPI_Allgather");
    MPI_Request req;
    check(MPI_Iallgather(in, c, type(t), out, c, type(t), comm_, &req), "MPI_Iallgather");
    wait(req, "MPI_Iallgather");
  }
  void do_all_gather_host(const void* in, void* out, std::size_t bytes) override {
    do_all_gather(in, out, bytes, DType::u8);
  }
  void do_broadcast_host(void* buf, std::size_t bytes, int root) override {
    do_broadcast(buf, bytes, DType::u8, root);
  }

 private:
  static MPI_Datatype type(DType t) {
    return t == DType::f32 ? MPI_FLOAT : t == DType::f64 ? MPI_DOUBLE : MPI_BYTE;
  }
  int count(std::size_t n, const char* call) const {
    if (n > static_cast<std::size_t>(INT_MAX))
      throw value_error(std::string(call) + " on " + where() + ": " + std::to_string(n) +
                        " elements exceed MPI's int count");
    return static_cast<int>(n);
  }
  void check(int rc, const char* call) const {
    if (rc != MPI_SUCCESS)
      throw comm_error(std::string(call) + " failed on " + where() + ": " +
                       detail::mpi_error_string(rc));
  }
  // Polls the request until done or the deadline; spins briefly, then yields the core
  // between polls (ranks may share cores).
  void wait(MPI_Request& req, const char* call) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(timeout_);
    for (unsigned polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), call);
      if (done) return;
      if (polls >= 64) {
        if ((polls & 63) == 0 && clock::now() > deadline)
          abort(std::string(call) + " did not complete within " + seconds(timeout_) + " s on " +
                where() +
                ": another rank died, hangs or stopped calling collectives; ending the job");
        std::this_thread::yield();
      }
    }
  }

  static std::string seconds(double s) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", s);
    return b;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  double timeout_ = 300;
};

}  // namespace siam::parallel

// The communicator interface of data-parallel training: who am I (rank, size, local rank),
// and the few collectives a data-parallel step needs (all-reduce sum, broadcast, all-gather,
// barrier). Implementations: LocalCommunicator (one process, does nothing: single-process
// code needs no #ifdef), MpiCommunicator (siam/parallel/mpi.hpp) and NcclCommunicator
// (siam/parallel/nccl.hpp). The umbrella header includes none of them.
//
// Buffers of all_reduce_sum / broadcast / all_gather live where memory() says (host memory
// for MPI, device memory for NCCL); the *_host collectives always take host bytes (used for
// handshakes and control flags). Every collective is called by every rank in the same order.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <type_traits>

#include "siam/error.hpp"

namespace siam::parallel {

/// A collective or communicator call failed, or the ranks disagree (different settings,
/// network or data). The message names the call and the rank(s).
struct comm_error : error {
  using error::error;
};

/// The number of processes the launcher started (mpirun / mpiexec of Open MPI, MPICH or
/// Hydra, a PMIx launcher such as srun), read from the launcher's environment before MPI is
/// initialised, so that a plain run (no launcher: 1) never initialises MPI. A value below 1
/// or not a number counts as 1.
inline int launched_ranks() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* s = std::getenv(v)) return std::max(1, std::atoi(s));
  return 1;
}

enum class Memory { host, device };
enum class DType : std::uint32_t { f32 = 1, f64 = 2, u8 = 3 };

template <class T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "siam::parallel: collectives carry float or double buffers");
  return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Rank among the processes of this machine (chooses the GPU of a rank).
  virtual int local_rank() const = 0;
  /// Where the buffers of all_reduce_sum, broadcast and all_gather must live.
  virtual Memory memory() const = 0;
  /// "local", "mpi", "nccl".
  virtual std::string name() const = 0;

  /// buf = sum over ranks of buf (element-wise), on every rank.
  template <class T>
  void all_reduce_sum(std::span<T> buf) {
    do_all_reduce_sum(buf.data(), buf.size(), dtype_of<T>());
  }
  /// buf = root's buf on every rank. Throws value_error for a root outside [0, size()).
  template <class T>
  void broadcast(std::span<T> buf, int root = 0) {
    check_root(root, "broadcast");
    do_broadcast(buf.data(), buf.size(), dtype_of<T>(), root);
  }
  /// out[r * in.size() + i] = in[i] of rank r. Throws shape_error unless
  /// out.size() == size() * in.size().
  template <class T>
  void all_gather(std::span<const T> in, std::span<T> out) {
    if (out.size() != in.size() * static_cast<std::size_t>(size()))
      throw shape_error("all_gather: output holds " + std::to_string(out.size()) + " values, " +
                        std::to_string(size()) + " ranks x " + std::to_string(in.size()) +
                        " are needed");
    do_all_gather(in.data(), out.data(), in.size(), dtype_of<T>());
  }
  /// The same as all_gather, on host bytes, for every communicator.
  void all_gather_host(const void* in, std::size_t bytes, void* out) {
    do_all_gather_host(in, out, bytes);
  }
  /// Host bytes of root on every rank.
  void broadcast_host(void* buf, std::size_t bytes, int root = 0) {
    check_root(root, "broadcast_host");
    do_broadcast_host(buf, bytes, root);
  }
  virtual void barrier() = 0;

  /// "rank 1 of 4" for messages.
  std::string where() const {
    return "rank " + std::to_string(rank()) + " of " + std::to_string(size());
  }

 protected:
  virtual void do_all_reduce_sum(void* buf, std::size_t n, DType t) = 0;
  virtual void do_broadcast(void* buf, std::size_t n, DType t, int root) = 0;
  virtual void do_all_gather(const void* in, void* out, std::size_t n, DType t) = 0;
  virtual void do_all_gather_host(const void* in, void* out, std::size_t bytes) = 0;
  virtual void do_broadcast_host(void* buf, std::size_t bytes, int root) = 0;

  static std::size_t bytes_of(DType t) { return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 1; }

 private:
  void check_root(int root, const char* op) const {
    if (root < 0 || root >= size())
      throw value_error(std::string(op) + ": root " + std::to_string(root) +
                        " is not a rank of a communicator of size " + std::to_string(size()));
  }
};

/// One process: rank 0 of 1. Reductions and broadcasts leave the buffer as it is; a gather
/// copies (host memory).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  Memory memory() const override { return Memory::host; }
  std::string name() const override { return "local"; }
  void barrier() override {}

 protected:
  void do_all_reduce_sum(void*, std::size_t, DType) override {}
  void do_broadcast(void*, std::size_t, DType, int) override {}
  void do_all_gather(const void* in, void* out, std::size_t n, DType t) override {
    copy(in, out, n * bytes_of(t));
  }
  void do_all_gather_host(const void* in, void* out, std::size_t bytes) override {
    copy(in, out, bytes);
  }
  void do_broadcast_host(void*, std::size_t, int) override {}

 private:
  static void copy(const void* in, void* out, std::size_t bytes) {
    const auto* s = static_cast<const unsigned char*>(in);
    auto* d = static_cast<unsigned char*>(out);
    if (s != d)
      for (std::size_t i = 0; i < bytes; ++i)
        d[i] = s[i];
  }
};

}  // namespace siam::parallel

// mnist_siamese under `mpirun -np N` (built with MPI only: SIAM_EXAMPLE_HAS_MPI): the same
// flags, trained data-parallel (siam/parallel/trainer.hpp). Every rank loads the same data and
// draws the same global batches; rank 0 evaluates and writes every file, the other ranks
// write nothing and print only errors. With --device gpu (and NCCL), each rank uses the
// GPU of its local rank.
//
// Environment (the command line stays that of one process):
//   SIAM_DIST_BLOCKS=K    deterministic mode with K blocks: results bit-identical for any
//                         number of ranks up to K (also with one process, which then runs
//                         the same K blocks); unset: the default all-reduce
//   SIAM_DIST_TIMEOUT=S   bound on every collective (default 300 s; see siam/parallel/mpi.hpp)
#pragma once

#include <siam/parallel/mpi.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>

#include "options.hpp"
#include "run.hpp"

namespace mnist_siamese {

/// The data-parallel options of SIAM_DIST_BLOCKS, or none (plain training) when it is unset
/// and one process runs. Throws value_error for a malformed value.
inline std::optional<siam::parallel::DataParallelOptions> dist_options(int ranks) {
  siam::parallel::DataParallelOptions d;
  if (const char* s = std::getenv("SIAM_DIST_BLOCKS"); s && *s) {
    char* end = nullptr;
    const long k = std::strtol(s, &end, 10);
    if (*end != '\0' || k < 1 || k > 4096)
      throw siam::value_error(std::string("SIAM_DIST_BLOCKS=") + s +
                              ": expected a number of blocks in [1, 4096]");
    d.deterministic = true;
    d.blocks = static_cast<std::size_t>(k);
  } else if (ranks == 1) {
    return std::nullopt;
  }
  return d;
}

#if defined(SIAM_EXAMPLE_HAS_NCCL)
// Defined in distributed_gpu.cu: the run on this rank's GPU, gradients summed by NCCL.
int run_gpu_distributed(const Options& o, siam::parallel::MpiCommunicator& mpi,
                        siam::parallel::DataParallelOptions d);
#endif

/// Runs the training of `o` on every rank of the job: returns the exit code (an error on
/// one rank ends the whole job through MPI_Abort, so no rank waits for a dead one).
/// `gpu`: run on the GPU (the caller checked that one is present).
inline int run_distributed(const Options& o, bool gpu) {
  siam::parallel::MpiEnvironment env;
  siam::parallel::MpiCommunicator comm(env);
  if (comm.rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    throw siam::io_error("cannot silence the output of " + comm.where());
  try {
    const auto d = *dist_options(comm.size());
    if (gpu) {
#if defined(SIAM_EXAMPLE_HAS_NCCL)
      return run_gpu_distributed(o, comm, d);
#else
      throw siam::value_error("--device gpu with " + std::to_string(comm.size()) +
                              " ranks needs NCCL (this build has none); use --device cpu");
#endif
    }
    return run<siam::Cpu>(o, comm, d);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s (%s)\n", e.what(), comm.where().c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

/// Training under a launcher with several ranks, or with SIAM_DIST_BLOCKS in one process:
/// the exit code; none for a plain run. `gpu_unavailable` says why no GPU can run (empty:
/// one can); null in a build without CUDA.
inline std::optional<int> run_if_distributed(const Options& o, std::string (*gpu_unavailable)()) {
  const int ranks = siam::parallel::launched_ranks();
  if (ranks == 1) {
    const auto d = dist_options(1);
    if (!d) return std::nullopt;
    siam::parallel::LocalCommunicator one;  // deterministic blocks in one process (on the CPU)
    return run<siam::Cpu>(o, one, *d);
  }
  bool gpu = false;
  if (o.device != "cpu" && gpu_unavailable) {
    const std::string why = gpu_unavailable();
    if (!why.empty() && o.device == "gpu") throw siam::value_error("--device gpu: " + why);
    gpu = why.empty();
  }
  return run_distributed(o, gpu);
}

}  // namespace mnist_siamese

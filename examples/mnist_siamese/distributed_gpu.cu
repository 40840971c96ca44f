// The GPU data-parallel run of the example (distributed.hpp): one GPU per rank, chosen by
// the local rank, gradients summed by NCCL. Compiled by nvcc, only with MPI and NCCL.
#include <siam/backend/cuda.hpp>
#include <siam/parallel/nccl.hpp>
#if defined(SIAM_HAS_CUDNN)
#include <siam/backend/cudnn.hpp>  // convolutions on the GPU (--arch cnn)
#endif

#include "run.hpp"

namespace mnist_siamese {

int run_gpu_distributed(const Options& o, siam::parallel::MpiCommunicator& mpi,
                        siam::parallel::DataParallelOptions d) {
  siam::parallel::NcclCommunicator nccl(mpi);  // sets this rank's device before any allocation
  return run<siam::Cuda>(o, nccl, d);
}

}  // namespace mnist_siamese

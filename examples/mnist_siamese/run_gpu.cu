// The CUDA instantiation of the example's training run, compiled by nvcc without Eigen.
#include <siam/backend/cuda.hpp>
#if defined(SIAM_HAS_CUDNN)
#include <siam/backend/cudnn.hpp>  // --arch cnn
#endif

#include "run.hpp"

namespace mnist_siamese {

int run_gpu(const Options& o) {
  return run<siam::Cuda>(o);
}

std::string gpu_unavailable_reason() {
  try {
    siam::cuda::require_device();
    return {};
  } catch (const siam::cuda_error& e) {
    return e.what();
  }
}

}  // namespace mnist_siamese

// Checked CUDA and cuBLAS calls: SIAM_CUDA_CHECK / SIAM_CUBLAS_CHECK throw siam::cuda_error
// naming the call, the error and the source position; cuda_out_of_memory names the device and
// the bytes.
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "siam/error.hpp"

/// Evaluates a CUDA runtime call once; throws siam::cuda_error naming the call, the error and the
/// source position unless it returned cudaSuccess.
#define SIAM_CUDA_CHECK(call) ::siam::cuda::throw_on_cuda_error((call), #call, __FILE__, __LINE__)

/// Evaluates a cuBLAS call once; throws siam::cuda_error naming the call, the status and the
/// source position unless it returned CUBLAS_STATUS_SUCCESS.
#define SIAM_CUBLAS_CHECK(call) \
  ::siam::cuda::throw_on_cublas_error((call), #call, __FILE__, __LINE__)

namespace siam::cuda {

// ---------------------------------------------------------------------------------------------
// Checked calls

/// Does nothing for cudaSuccess; otherwise throws cuda_error "<call> failed: <name> (<text>) at
/// <file>:<line>". Pure: it neither reads nor clears the runtime's last-error state.
inline void throw_on_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw cuda_error(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" +
                   cudaGetErrorString(status) + ") at " + file + ":" + std::to_string(line));
}

/// Does nothing for CUBLAS_STATUS_SUCCESS; otherwise throws cuda_error like throw_on_cuda_error.
inline void throw_on_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                  int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw cuda_error(std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                   cublasGetStatusString(status) + ") at " + file + ":" + std::to_string(line));
}

}  // namespace siam::cuda

namespace siam {

/// A device allocation failed for lack of memory even after the pool trimmed its cache. The
/// message and the fields name the device, the requested bytes and the device's free bytes.
struct cuda_out_of_memory : cuda_error {
  cuda_out_of_memory(const std::string& what, int on_device, std::size_t requested,
                     std::size_t free_now, std::size_t total)
      : cuda_error(what),
        device(on_device),
        requested_bytes(requested),
        free_bytes(free_now),
        total_bytes(total) {}
  int device;
  std::size_t requested_bytes;
  std::size_t free_bytes;  // cudaMemGetInfo after the failed retry
  std::size_t total_bytes;
};

}  // namespace siam

// CUDA devices and their handles: device discovery (device_count, device_available,
// require_device, current_device), RAII owners of streams, cuBLAS/cuBLASLt handles, events,
// memory pools and pinned memory, and DeviceGuard.
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <type_traits>

#include "siam/backend/cuda_error.hpp"

// ---------------------------------------------------------------------------------------------
// Device discovery

namespace siam::detail {

struct DeviceQuery {
  int count;           // 0 when the query failed
  cudaError_t status;  // what cudaGetDeviceCount returned
};

// Asked once per process: devices do not come and go under a running program, and a machine
// without a driver would otherwise pay for a failed driver load on every call.
inline DeviceQuery query_devices() noexcept {
  static const DeviceQuery query = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // the failure is recorded here; keep it out of later checks
      count = 0;
    }
    return DeviceQuery{count, status};
  }();
  return query;
}

}  // namespace siam::detail

namespace siam::cuda {

/// Number of usable CUDA devices; 0 when there is no driver or no device. Never throws.
inline int device_count() noexcept {
  return detail::query_devices().count;
}

/// True when at least one CUDA device can be used.
inline bool device_available() noexcept {
  return device_count() > 0;
}

/// Returns when a device is available; otherwise throws cuda_error "a CUDA device was requested
/// but none is available (<why cudaGetDeviceCount found none>)".
inline void require_device() {
  const detail::DeviceQuery query = detail::query_devices();
  if (query.count > 0) return;
  const std::string reason =
      query.status == cudaSuccess
          ? std::string("cudaGetDeviceCount reported 0 devices")
          : std::string(cudaGetErrorName(query.status)) + ": " + cudaGetErrorString(query.status);
  throw cuda_error("a CUDA device was requested but none is available (" + reason + ")");
}

/// The calling thread's current CUDA device (cudaGetDevice).
inline int current_device() {
  require_device();
  int device = 0;
  SIAM_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace siam::cuda

// ---------------------------------------------------------------------------------------------
// Internals: RAII handles, device guard, pool, staging ring

namespace siam::detail {

struct StreamDeleter {
  void operator()(cudaStream_t s) const noexcept { (void)cudaStreamDestroy(s); }
};
struct CublasDeleter {
  void operator()(cublasHandle_t h) const noexcept { (void)cublasDestroy(h); }
};
struct CublasLtDeleter {
  void operator()(cublasLtHandle_t h) const noexcept { (void)cublasLtDestroy(h); }
};
struct LtMatmulDescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const noexcept { (void)cublasLtMatmulDescDestroy(d); }
};
struct LtLayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const noexcept { (void)cublasLtMatrixLayoutDestroy(l); }
};
struct LtPreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t p) const noexcept {
    (void)cublasLtMatmulPreferenceDestroy(p);
  }
};
struct EventDeleter {
  void operator()(cudaEvent_t e) const noexcept { (void)cudaEventDestroy(e); }
};
struct MemPoolDeleter {
  void operator()(cudaMemPool_t p) const noexcept { (void)cudaMemPoolDestroy(p); }
};
struct PinnedDeleter {
  void operator()(void* p) const noexcept { (void)cudaFreeHost(p); }
};
using UniqueStream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter>;
using UniqueCublas = std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, CublasDeleter>;
using UniqueCublasLt = std::unique_ptr<std::remove_pointer_t<cublasLtHandle_t>, CublasLtDeleter>;
using UniqueLtDesc =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, LtMatmulDescDeleter>;
using UniqueLtLayout =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, LtLayoutDeleter>;
using UniqueLtPreference =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, LtPreferenceDeleter>;
using UniqueEvent = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;
using UniqueMemPool = std::unique_ptr<std::remove_pointer_t<cudaMemPool_t>, MemPoolDeleter>;
using UniquePinned = std::unique_ptr<void, PinnedDeleter>;

inline UniqueEvent make_event(unsigned flags = cudaEventDisableTiming) {
  cudaEvent_t e = nullptr;
  SIAM_CUDA_CHECK(cudaEventCreateWithFlags(&e, flags));
  return UniqueEvent(e);
}

/// Makes `device` current for its lifetime and restores the previous device afterwards, so that
/// pool and context code never leaves the caller on another device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    SIAM_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) SIAM_CUDA_CHECK(cudaSetDevice(device));
    switched_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (switched_) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace siam::detail

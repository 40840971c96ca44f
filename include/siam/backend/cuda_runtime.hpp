// The CUDA runtime layer of siam's GPU backend: checked CUDA/cuBLAS calls, device discovery, a
// lazily created per-device context (one stream + one cuBLAS handle), a caching device allocator,
// host/device copies and a row-major GEMM. The backend's expression kernels sit on top of it.
//
// Ordering model (read this before adding a kernel): everything siam does on a device is issued
// on that device's single context stream, `stream()`. Work on one stream runs in issue order, so
// a device block handed back to the pool may be handed out again at once: any later kernel or copy
// that writes it is queued behind the work still reading it. Code that touches pool memory on any
// other stream must synchronize with `stream()` first.
//
// Only host code lives here: the header compiles under nvcc and under a plain C++20 compiler that
// sees the CUDA runtime and cuBLAS headers (link with -lcudart -lcublas).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

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

// ---------------------------------------------------------------------------------------------
// Device discovery

}  // namespace siam::cuda

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

/// Allocation statistics of one device's pool. Sizes are pool block sizes (requests rounded up).
struct PoolStats {
  std::size_t cuda_malloc_calls = 0;  // cudaMalloc calls the pool made, failed ones included
  std::size_t cuda_free_calls = 0;    // cudaFree calls the pool made
  std::size_t bytes_in_use = 0;       // bytes of blocks handed out and not yet returned
  std::size_t bytes_cached = 0;       // bytes of returned blocks kept for reuse
};

}  // namespace siam::cuda

// ---------------------------------------------------------------------------------------------
// Internals: RAII handles, device guard, pool

namespace siam::detail {

struct StreamDeleter {
  void operator()(cudaStream_t s) const noexcept { (void)cudaStreamDestroy(s); }
};
struct CublasDeleter {
  void operator()(cublasHandle_t h) const noexcept { (void)cublasDestroy(h); }
};
struct EventDeleter {
  void operator()(cudaEvent_t e) const noexcept { (void)cudaEventDestroy(e); }
};
using UniqueStream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDeleter>;
using UniqueCublas = std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, CublasDeleter>;
using UniqueEvent = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;

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

/// Pool block size for a request of `bytes` (> 0). Small requests go to power-of-two buckets from
/// 512 B to 1 MiB (at most 2x waste, few distinct sizes); larger ones round up to 2 MiB, the
/// granularity cudaMalloc hands out anyway. Few distinct sizes is what lets a training loop with
/// varying batch sizes reach a steady state with no cudaMalloc at all.
inline std::size_t pool_block_size(std::size_t bytes) noexcept {
  constexpr std::size_t kMinBlock = 512;
  constexpr std::size_t kSmallLimit = std::size_t{1} << 20;
  constexpr std::size_t kLargeGranule = std::size_t{2} << 20;
  if (bytes <= kMinBlock) return kMinBlock;
  if (bytes <= kSmallLimit) {
    std::size_t block = kMinBlock;
    while (block < bytes)
      block <<= 1;
    return block;
  }
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

/// Caching allocator for one device. Blocks handed back are kept in per-size free lists instead of
/// being cudaFree'd (cudaFree synchronizes the device and cudaMalloc is slow). Reuse is safe
/// without events because all siam work is on the owning context's one stream (see the top of this
/// file). Thread-safe.
class DevicePool {
 public:
  DevicePool(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;
  ~DevicePool() {
    // Best effort: errors cannot be reported from a destructor.
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks)
        (void)cudaFree(p);
  }

  /// A block of at least `bytes` bytes (nullptr for 0). On out-of-memory the cache is released
  /// and cudaMalloc retried once; then cuda_error names the request.
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > std::numeric_limits<std::size_t>::max() / 2)
      throw value_error("device allocation of " + std::to_string(bytes) + " bytes is too large");
    const std::size_t block = pool_block_size(bytes);
    std::lock_guard lock(mutex_);
    void* p = nullptr;
    if (auto it = free_.find(block); it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= block;
    } else {
      p = malloc_block(bytes, block);
    }
    live_.emplace(p, block);
    stats_.bytes_in_use += block;
    return p;
  }

  /// Returns a block from allocate(`bytes`) to the cache. Throws value_error for a pointer this
  /// pool does not own or a size that does not match the allocation; no-op for nullptr.
  void deallocate(void* p, std::size_t bytes) {
    if (p == nullptr) return;
    std::lock_guard lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end())
      throw value_error("deallocate: pointer was not allocated by the pool of device " +
                        std::to_string(device_));
    const std::size_t block = it->second;
    if (bytes == 0 || pool_block_size(bytes) != block)
      throw value_error("deallocate: " + std::to_string(bytes) +
                        " bytes does not match the allocation (block of " + std::to_string(block) +
                        " bytes)");
    live_.erase(it);
    free_[block].push_back(p);
    stats_.bytes_in_use -= block;
    stats_.bytes_cached += block;
  }

  /// cudaFree's every cached block (blocks in use are untouched). Waits for the stream first,
  /// since queued work may still use a block that was already handed back.
  void release_cached() {
    std::lock_guard lock(mutex_);
    release_locked();
  }

  cuda::PoolStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  void release_locked() {
    DeviceGuard guard(device_);
    SIAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (auto& [size, blocks] : free_) {
      while (!blocks.empty()) {
        ++stats_.cuda_free_calls;
        SIAM_CUDA_CHECK(cudaFree(blocks.back()));
        blocks.pop_back();
        stats_.bytes_cached -= size;
      }
    }
  }

  void* malloc_block(std::size_t bytes, std::size_t block) {
    DeviceGuard guard(device_);
    void* p = nullptr;
    ++stats_.cuda_malloc_calls;
    cudaError_t status = cudaMalloc(&p, block);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // out-of-memory is not sticky; clear it before retrying
      release_locked();
      ++stats_.cuda_malloc_calls;
      status = cudaMalloc(&p, block);
      if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        throw cuda_error("device allocation of " + std::to_string(bytes) + " bytes (block of " +
                         std::to_string(block) + ") failed on device " + std::to_string(device_) +
                         ": out of memory even after releasing the cache (" +
                         std::to_string(stats_.bytes_in_use) + " bytes in use by siam)");
      }
    }
    cuda::throw_on_cuda_error(status, "cudaMalloc", __FILE__, __LINE__);
    return p;
  }

  int device_;
  cudaStream_t stream_;  // owned by the context
  mutable std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;  // block size -> cached blocks
  std::unordered_map<void*, std::size_t> live_;               // handed-out block -> block size
  cuda::PoolStats stats_;
};

}  // namespace siam::detail

namespace siam::cuda {

// ---------------------------------------------------------------------------------------------
// Per-device context

/// Everything siam keeps per device: one non-blocking stream (so it never serializes with the
/// legacy default stream), one cuBLAS handle bound to it, and the device's pool. Use context()
/// rather than constructing one.
///
/// Math mode: the handle runs CUBLAS_DEFAULT_MATH and gemm() asks for the _PEDANTIC compute types,
/// so FP32 products are computed in plain FP32: no TF32 tensor cores and no BF16x9 emulation, not
/// even when environment variables would allow them. set_tf32(true) opts in to TF32.
class Context {
 public:
  explicit Context(int device) : device_(device) {
    detail::DeviceGuard guard(device);
    cudaStream_t s = nullptr;
    SIAM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    stream_.reset(s);
    cublasHandle_t h = nullptr;
    SIAM_CUBLAS_CHECK(cublasCreate(&h));
    cublas_.reset(h);
    SIAM_CUBLAS_CHECK(cublasSetStream(h, s));
    SIAM_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    SIAM_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    pool_ = std::make_unique<detail::DevicePool>(device, s);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const noexcept { return device_; }
  cudaStream_t stream() const noexcept { return stream_.get(); }
  cublasHandle_t cublas() const noexcept { return cublas_.get(); }
  detail::DevicePool& pool() noexcept { return *pool_; }

  /// Whether FP32 GEMMs may use TF32 tensor cores (off by default).
  bool tf32() const noexcept { return tf32_; }

  /// Opts FP32 GEMMs in to (true) or out of (false) TF32: about 10 mantissa bits per input, so
  /// relative errors near 1e-3 instead of 1e-6. Affects the handle's math mode too, so cuBLAS
  /// routines called directly on cublas() follow the same choice.
  void set_tf32(bool on) {
    SIAM_CUBLAS_CHECK(
        cublasSetMathMode(cublas_.get(), on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    tf32_ = on;
  }

 private:
  // Declaration order is destruction order reversed: the pool (which waits on the stream) goes
  // first, then the handle, then the stream it is bound to.
  int device_;
  detail::UniqueStream stream_;
  detail::UniqueCublas cublas_;
  std::unique_ptr<detail::DevicePool> pool_;
  bool tf32_ = false;
};

/// The context of `device`, created on first use. Throws cuda_error without a device and
/// value_error for an index outside [0, device_count()).
inline Context& context(int device) {
  require_device();
  if (device < 0 || device >= device_count())
    throw value_error("CUDA device " + std::to_string(device) + " does not exist (" +
                      std::to_string(device_count()) + " available)");
  // Deliberately never destroyed: at exit the CUDA runtime and cuBLAS may already be torn down
  // when function-local statics are destroyed, and the driver reclaims everything anyway.
  struct Registry {
    std::mutex mutex;
    std::vector<std::unique_ptr<Context>> contexts;
  };
  static Registry* const registry = [] {
    auto* r = new Registry;
    r->contexts.resize(static_cast<std::size_t>(device_count()));
    return r;
  }();
  std::lock_guard lock(registry->mutex);
  auto& slot = registry->contexts[static_cast<std::size_t>(device)];
  if (!slot) slot = std::make_unique<Context>(device);
  return *slot;
}

/// The context of the calling thread's current device.
inline Context& context() {
  return context(current_device());
}

/// The current device's context stream: queue siam kernels here (see the ordering model above).
inline cudaStream_t stream() {
  return context().stream();
}

/// The current device's cuBLAS handle, bound to stream().
inline cublasHandle_t cublas_handle() {
  return context().cublas();
}

/// Opts the current device's FP32 GEMMs in to or out of TF32 (Context::set_tf32).
inline void set_tf32(bool on) {
  context().set_tf32(on);
}

/// Whether the current device's FP32 GEMMs may use TF32.
inline bool tf32_enabled() {
  return context().tf32();
}

/// Blocks the host until all work queued on stream() has finished; rethrows asynchronous errors.
inline void synchronize() {
  SIAM_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

// ---------------------------------------------------------------------------------------------
// Allocation

/// Device memory of at least `bytes` bytes from the current device's pool (nullptr for 0). The
/// block may still be in use by queued work of an earlier owner; only use it on stream().
inline void* allocate(std::size_t bytes) {
  return context().pool().allocate(bytes);
}

/// Returns memory from allocate(`bytes`) to the current device's pool, which keeps it for reuse.
/// Queued work may still read it: that is safe as long as every user is on stream().
inline void deallocate(void* p, std::size_t bytes) {
  if (p != nullptr) context().pool().deallocate(p, bytes);
}

/// Frees every cached block of the current device's pool (e.g. before handing memory to another
/// library). Blocks in use are kept.
inline void release_cached() {
  context().pool().release_cached();
}

/// Statistics of the current device's pool.
inline PoolStats pool_stats() {
  return context().pool().stats();
}

/// Move-only owner of `size()` elements of T in device memory from the pool of the device that was
/// current at construction. Contents are uninitialized.
template <class T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "DeviceBuffer holds trivially copyable types");

 public:
  DeviceBuffer() noexcept = default;
  explicit DeviceBuffer(std::size_t n) : size_(n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw value_error("DeviceBuffer of " + std::to_string(n) + " elements overflows size_t");
    if (n == 0) return;
    pool_ = &context().pool();
    data_ = static_cast<T*>(pool_->allocate(n * sizeof(T)));
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      pool_ = std::exchange(other.pool_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }

  /// Returns the memory to the pool and leaves the buffer empty.
  void reset() noexcept {
    // Cannot throw: the block came from this pool with exactly this size.
    if (data_ != nullptr) pool_->deallocate(data_, size_ * sizeof(T));
    pool_ = nullptr;
    data_ = nullptr;
    size_ = 0;
  }

 private:
  detail::DevicePool* pool_ = nullptr;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Events

/// RAII CUDA event, for ordering against or timing work on a stream.
class Event {
 public:
  /// `timing` enables elapsed_ms(); events without it are cheaper to record and wait on.
  explicit Event(bool timing = false) {
    cudaEvent_t e = nullptr;
    SIAM_CUDA_CHECK(
        cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    event_.reset(e);
  }
  /// Captures the work queued on `s` so far.
  void record(cudaStream_t s) { SIAM_CUDA_CHECK(cudaEventRecord(event_.get(), s)); }
  /// Blocks the host until the captured work has finished.
  void synchronize() { SIAM_CUDA_CHECK(cudaEventSynchronize(event_.get())); }
  /// Milliseconds between `start` and this event; both recorded, both created with timing.
  float elapsed_ms(const Event& start) const {
    float ms = 0.0f;
    SIAM_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_.get(), event_.get()));
    return ms;
  }
  cudaEvent_t get() const noexcept { return event_.get(); }

 private:
  detail::UniqueEvent event_;
};

// ---------------------------------------------------------------------------------------------
// Copies (all on stream(); n counts elements)

/// Host -> device. Returns once the copy is complete, so `src` may be reused at once.
template <class T>
void copy_to_device(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  const cudaStream_t s = stream();
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
  SIAM_CUDA_CHECK(cudaStreamSynchronize(s));
}

/// Device -> host. Waits for all queued work that produces `src`, then for the copy.
template <class T>
void copy_to_host(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  const cudaStream_t s = stream();
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  SIAM_CUDA_CHECK(cudaStreamSynchronize(s));
}

/// Device -> device, queued on stream() (asynchronous to the host).
template <class T>
void copy_device(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream()));
}

// ---------------------------------------------------------------------------------------------
// GEMM

}  // namespace siam::cuda

namespace siam::detail {

inline void check_gemm_dims(bool trans_a, bool trans_b, int m, int n, int k, const void* A, int lda,
                            const void* B, int ldb, const void* C, int ldc) {
  const auto dims = [](int r, int c) { return std::to_string(r) + " x " + std::to_string(c); };
  if (m < 0 || n < 0 || k < 0)
    throw value_error("gemm: negative size m=" + std::to_string(m) + " n=" + std::to_string(n) +
                      " k=" + std::to_string(k));
  // Row-major: the leading dimension is the stride between rows, at least one row's length.
  const auto check_ld = [&](const char* name, int ld, int rows, int cols) {
    if (ld < (cols > 1 ? cols : 1))
      throw value_error(std::string("gemm: ") + name + " is stored " + dims(rows, cols) +
                        " row-major but its leading dimension is " + std::to_string(ld));
  };
  check_ld("A", lda, trans_a ? k : m, trans_a ? m : k);
  check_ld("B", ldb, trans_b ? n : k, trans_b ? k : n);
  check_ld("C", ldc, m, n);
  if (m > 0 && n > 0 && (C == nullptr || (k > 0 && (A == nullptr || B == nullptr))))
    throw value_error("gemm: null matrix pointer for op(A) " + dims(m, k) + ", op(B) " +
                      dims(k, n));
}

// C[m x n] = beta * C for the k == 0 product, which cuBLAS's gemm is not asked to handle. As in
// BLAS, beta == 0 writes zeros without reading C (NaNs in C do not survive).
template <class T>
void scale_rows(cuda::Context& ctx, int m, int n, T beta, T* C, int ldc) {
  if (beta == T(1)) return;
  const std::size_t row_bytes = static_cast<std::size_t>(n) * sizeof(T);
  if (beta == T(0)) {
    SIAM_CUDA_CHECK(cudaMemset2DAsync(C, static_cast<std::size_t>(ldc) * sizeof(T), 0, row_bytes,
                                      static_cast<std::size_t>(m), ctx.stream()));
    return;
  }
  const auto scal = [&](T* x, std::int64_t count) {
    if constexpr (std::is_same_v<T, float>)
      SIAM_CUBLAS_CHECK(cublasSscal_64(ctx.cublas(), count, &beta, x, 1));
    else
      SIAM_CUBLAS_CHECK(cublasDscal_64(ctx.cublas(), count, &beta, x, 1));
  };
  if (ldc == n) {
    scal(C, static_cast<std::int64_t>(m) * n);  // rows are contiguous: one call
  } else {
    for (int r = 0; r < m; ++r)
      scal(C + static_cast<std::size_t>(r) * ldc, n);
  }
}

}  // namespace siam::detail

namespace siam::cuda {

/// C = alpha * op(A) * op(B) + beta * C on the current device's stream, for float and double.
/// All matrices are row-major with row strides lda/ldb/ldc; op(A) is m x k (A is stored m x k, or
/// k x m when trans_a), op(B) is k x n (stored k x n, or n x k when trans_b), C is m x n.
/// m, n or k may be 0: then nothing is launched, except that k == 0 still sets C = beta * C.
/// float runs in plain FP32 (pedantic) unless set_tf32(true); double in FP64. Throws value_error
/// for negative sizes or leading dimensions below a row's length, cuda_error for cuBLAS failures.
template <class T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "siam::cuda::gemm supports float and double");
  detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
  if (m == 0 || n == 0) return;
  Context& ctx = context();
  if (k == 0) {
    detail::scale_rows(ctx, m, n, beta, C, ldc);
    return;
  }
  constexpr bool is_float = std::is_same_v<T, float>;
  constexpr cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t compute =
      is_float ? (ctx.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_PEDANTIC)
               : CUBLAS_COMPUTE_64F_PEDANTIC;
  // The one place where row-major meets cuBLAS's column-major: a row-major r x c matrix with row
  // stride ld is, byte for byte, the column-major c x r matrix X^T with leading dimension ld. So
  // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A, n before m,
  // and keep each operand's own transpose flag.
  const auto op = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  SIAM_CUBLAS_CHECK(cublasGemmEx(ctx.cublas(), op(trans_b), op(trans_a), n, m, k, &alpha, B, type,
                                 ldb, A, type, lda, &beta, C, type, ldc, compute,
                                 CUBLAS_GEMM_DEFAULT));
}

}  // namespace siam::cuda

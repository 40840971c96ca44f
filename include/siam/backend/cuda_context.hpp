// The per-device context and what runs on its stream: Context (one non-blocking stream, one
// cuBLAS handle, the device's pool and staging ring), stream(), kernel launch checks, device
// memory and buffers, events, and host/device copies.
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "siam/backend/cuda_pool.hpp"
#include "siam/backend/cuda_staging.hpp"
#include "siam/backend/precision.hpp"

namespace siam::cuda {

/// Whether every launch is followed by a stream synchronisation and a check that names the kernel
/// (the debug mode). On when the program is compiled with -DSIAM_CUDA_SYNC_CHECK=1 or when the
/// environment variable SIAM_CUDA_SYNC_CHECK is set to anything but "0" (read once). Slow: the
/// host waits for every kernel.
inline bool sync_check_enabled() noexcept {
#if defined(SIAM_CUDA_SYNC_CHECK) && SIAM_CUDA_SYNC_CHECK
  return true;
#else
  static const bool on = [] {
    const char* v = std::getenv("SIAM_CUDA_SYNC_CHECK");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
  }();
  return on;
#endif
}

// ---------------------------------------------------------------------------------------------
// Per-device context

/// How FP32 GEMMs compute on the device (backend/precision.hpp): cuBLAS compute types
/// CUBLAS_COMPUTE_32F_PEDANTIC, _FAST_TF32 and _FAST_16BF.
using MatmulPrecision = siam::MatmulPrecision;

/// Everything siam keeps per device: one non-blocking stream (so it never serializes with the
/// legacy default stream), one cuBLAS handle bound to it, the device's pool and its staging ring.
/// Use context() rather than constructing one.
///
/// Math mode: the handle runs CUBLAS_DEFAULT_MATH and gemm() asks for the _PEDANTIC compute types,
/// so FP32 products are computed in plain FP32: no TF32 tensor cores and no BF16x9 emulation, not
/// even when environment variables would allow them. set_matmul_precision() opts in to TF32 or
/// BF16 tensor-core products of the same FP32 tensors (set_tf32(true) is the TF32 one).
///
/// Threads: any number of host threads may use one context. Their work interleaves on the one
/// stream in the order the calls are made; cuBLAS calls and math-mode changes are serialised by a
/// mutex (enqueueing only: the GPU work itself is not held up).
class Context {
 public:
  explicit Context(int device) : device_(device), staging_(device) {
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
    cublasLtHandle_t lt = nullptr;
    SIAM_CUBLAS_CHECK(cublasLtCreate(&lt));
    cublas_lt_.reset(lt);
    pool_ = std::make_unique<detail::DevicePool>(device, s);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const noexcept { return device_; }
  cudaStream_t stream() const noexcept { return stream_.get(); }
  /// The handle, bound to stream(). Callers from several threads hold cublas_mutex() around use.
  cublasHandle_t cublas() const noexcept { return cublas_.get(); }
  std::mutex& cublas_mutex() noexcept { return cublas_mutex_; }
  /// The cuBLASLt handle (GEMMs with fused epilogues); calls pass stream() explicitly.
  cublasLtHandle_t cublas_lt() const noexcept { return cublas_lt_.get(); }
  /// cuBLASLt's algorithm choice for each GEMM-with-epilogue problem seen (its shape, leading
  /// dimensions, pointer alignments, epilogue and compute type), so the heuristic runs once
  /// per problem rather than every call; nullopt where it found none. Guarded by
  /// cublas_mutex().
  using LtKey = std::array<std::int64_t, 12>;
  std::map<LtKey, std::optional<cublasLtMatmulHeuristicResult_t>>& lt_plans() noexcept {
    return lt_plans_;
  }
  detail::DevicePool& pool() noexcept { return *pool_; }
  detail::StagingRing& staging() noexcept { return staging_; }

  /// While a cuda::Graph captures on this context: where host data uploaded during the capture
  /// is kept (page-locked copies the graph owns, since every replay copies from them again);
  /// nullptr otherwise. Set by cuda::Graph only.
  std::vector<detail::UniquePinned>* capture_store() const noexcept { return capture_store_; }
  void set_capture_store(std::vector<detail::UniquePinned>* store) noexcept {
    capture_store_ = store;
  }

  /// How FP32 GEMMs compute (MatmulPrecision::highest by default).
  MatmulPrecision matmul_precision() const noexcept {
    return precision_.load(std::memory_order_acquire);
  }
  /// Whether FP32 GEMMs may use TF32 tensor cores.
  bool tf32() const noexcept { return matmul_precision() == MatmulPrecision::high; }

  /// Sets how FP32 GEMMs compute. TF32 also sets the handle's math mode, so cuBLAS routines
  /// called directly on cublas() follow it; BF16 has no handle math mode and applies to gemm().
  void set_matmul_precision(MatmulPrecision p) {
    std::lock_guard lock(cublas_mutex_);
    SIAM_CUBLAS_CHECK(cublasSetMathMode(cublas_.get(), p == MatmulPrecision::high
                                                           ? CUBLAS_TF32_TENSOR_OP_MATH
                                                           : CUBLAS_DEFAULT_MATH));
    precision_.store(p, std::memory_order_release);
  }
  /// Opts FP32 GEMMs in to (true) or out of (false) TF32: about 10 mantissa bits per input, so
  /// relative errors near 1e-3 instead of 1e-6.
  void set_tf32(bool on) {
    set_matmul_precision(on ? MatmulPrecision::high : MatmulPrecision::highest);
  }

 private:
  // Declaration order is destruction order reversed: the pool (which waits on the stream) goes
  // first, then the handle, then the stream it is bound to; the staging ring last.
  int device_;
  detail::StagingRing staging_;
  detail::UniqueStream stream_;
  detail::UniqueCublas cublas_;
  detail::UniqueCublasLt cublas_lt_;
  std::unique_ptr<detail::DevicePool> pool_;
  std::mutex cublas_mutex_;
  std::map<LtKey, std::optional<cublasLtMatmulHeuristicResult_t>> lt_plans_;
  std::atomic<MatmulPrecision> precision_{MatmulPrecision::highest};
  std::vector<detail::UniquePinned>* capture_store_ = nullptr;
};

}  // namespace siam::cuda

namespace siam::detail {

// Contexts by device, created on first use and deliberately never destroyed: at exit the CUDA
// runtime and cuBLAS may already be torn down when function-local statics are destroyed, and the
// driver reclaims everything anyway. Slots are published atomically, so reading one needs no lock.
struct ContextRegistry {
  std::mutex mutex;  // held while creating a context
  std::unique_ptr<std::atomic<cuda::Context*>[]> slots;
  int count = 0;
};

inline ContextRegistry& context_registry() {
  static ContextRegistry* const registry = [] {
    auto* r = new ContextRegistry;
    r->count = cuda::device_count();
    r->slots = std::make_unique<std::atomic<cuda::Context*>[]>(static_cast<std::size_t>(r->count));
    for (int i = 0; i < r->count; ++i)
      r->slots[static_cast<std::size_t>(i)].store(nullptr);
    return r;
  }();
  return *registry;
}

/// The context of `device` if it was created already, else nullptr. Never creates one.
inline cuda::Context* existing_context(int device) noexcept {
  ContextRegistry& r = context_registry();
  if (device < 0 || device >= r.count) return nullptr;
  return r.slots[static_cast<std::size_t>(device)].load(std::memory_order_acquire);
}

}  // namespace siam::detail

namespace siam::cuda {

/// The context of `device`, created on first use. Throws cuda_error without a device and
/// value_error for an index outside [0, device_count()).
inline Context& context(int device) {
  require_device();
  if (device < 0 || device >= device_count())
    throw value_error("CUDA device " + std::to_string(device) + " does not exist (" +
                      std::to_string(device_count()) + " available)");
  if (Context* c = detail::existing_context(device)) return *c;
  detail::ContextRegistry& r = detail::context_registry();
  std::lock_guard lock(r.mutex);
  auto& slot = r.slots[static_cast<std::size_t>(device)];
  if (Context* c = slot.load(std::memory_order_acquire)) return *c;
  auto created = std::make_unique<Context>(device);
  slot.store(created.get(), std::memory_order_release);
  return *created.release();
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

/// Sets how the current device's FP32 GEMMs compute (Context::set_matmul_precision).
inline void set_matmul_precision(MatmulPrecision p) {
  context().set_matmul_precision(p);
}
inline MatmulPrecision matmul_precision() {
  return context().matmul_precision();
}

/// Blocks the host until all work queued on stream() has finished; rethrows asynchronous errors.
inline void synchronize() {
  SIAM_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

// ---------------------------------------------------------------------------------------------
// Kernel launches

/// Kernel launches (and GEMM calls) issued so far by this process, from all threads.
inline std::atomic<std::uint64_t>& launch_counter() noexcept {
  static std::atomic<std::uint64_t> n{0};
  return n;
}
inline std::uint64_t launch_count() noexcept {
  return launch_counter().load(std::memory_order_relaxed);
}

/// Call right after launching `kernel` on `s`: counts the launch and throws cuda_error naming the
/// kernel if the launch was rejected. In the debug mode (sync_check_enabled()) it also waits for
/// the kernel and throws cuda_error naming it if it faulted, instead of letting the fault surface
/// at some later, unrelated call.
inline void check_launch(const char* kernel, cudaStream_t s) {
  launch_counter().fetch_add(1, std::memory_order_relaxed);
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess)
    throw cuda_error(std::string("launch of ") + kernel + " failed: " + cudaGetErrorName(launched) +
                     " (" + cudaGetErrorString(launched) + ")");
  if (!sync_check_enabled()) return;
  const cudaError_t ran = cudaStreamSynchronize(s);
  if (ran != cudaSuccess)
    throw cuda_error(std::string(kernel) + " failed while running (SIAM_CUDA_SYNC_CHECK): " +
                     cudaGetErrorName(ran) + " (" + cudaGetErrorString(ran) + ")");
}

/// In the debug mode, throws value_error when `p` is device memory of another device than the
/// current one (a kernel launched there would read memory it cannot see). Otherwise does nothing.
inline void check_device_of(const void* p, const char* what) {
  if (p == nullptr || !sync_check_enabled()) return;
  cudaPointerAttributes attr{};
  SIAM_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  if (attr.type != cudaMemoryTypeDevice) return;
  const int current = current_device();
  if (attr.device != current)
    throw value_error(std::string(what) + ": operand lives on CUDA device " +
                      std::to_string(attr.device) + " but device " + std::to_string(current) +
                      " is current");
}

// ---------------------------------------------------------------------------------------------
// Allocation

/// Device memory of `bytes` bytes from the current device's pool (nullptr for 0), usable by work
/// on stream() from now on. Throws cuda_out_of_memory when the device has no room for it.
inline void* allocate(std::size_t bytes) {
  return context().pool().allocate(bytes);
}

/// Returns memory from allocate(`bytes`) to the pool of the device it came from, whichever device
/// is current. The free is stream-ordered: work already queued may still use the block (on other
/// streams too, if they were recorded with record_stream). Throws value_error for a pointer no
/// pool owns or a size that does not match; no-op for nullptr.
inline void deallocate(void* p, std::size_t bytes) {
  if (p == nullptr) return;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    (void)cudaGetLastError();
    current = -1;
  }
  if (Context* c = detail::existing_context(current))
    if (c->pool().try_deallocate(p, bytes)) return;
  for (int d = 0; d < device_count(); ++d)
    if (d != current)
      if (Context* c = detail::existing_context(d))
        if (c->pool().try_deallocate(p, bytes)) return;
  throw value_error("deallocate: pointer was not allocated by siam's pool on any device");
}

/// Declares that work queued on `s` uses `p` (a block from allocate, not an interior pointer), so
/// that its free waits for that work. Needed for every stream other than stream().
inline void record_stream(const void* p, cudaStream_t s) {
  if (p == nullptr) return;
  for (int d = 0; d < device_count(); ++d)
    if (Context* c = detail::existing_context(d))
      if (c->pool().owns(p)) return c->pool().record_stream(p, s);
  throw value_error("record_stream: pointer was not allocated by siam's pool on any device");
}

/// Returns every cached block of the current device's pool to the system (e.g. before handing
/// memory to another library). Blocks in use are kept.
inline void release_cached() {
  context().pool().release_cached();
}

/// Bytes the current device's pool may keep reserved across synchronisations (DevicePool).
inline void set_cache_limit(std::size_t bytes) {
  context().pool().set_cache_limit(bytes);
}

/// Statistics of the current device's pool.
inline PoolStats pool_stats() {
  return context().pool().stats();
}

}  // namespace siam::cuda

namespace siam::detail {
inline std::atomic<std::uint64_t>& free_errors() noexcept {
  static std::atomic<std::uint64_t> n{0};
  return n;
}
}  // namespace siam::detail

namespace siam::cuda {

/// Frees that failed inside a destructor (where nothing can be thrown) since the process began.
/// The first one is also written to stderr; a non-zero count means memory was leaked.
inline std::uint64_t free_error_count() noexcept {
  return detail::free_errors().load(std::memory_order_relaxed);
}

/// Records a failed free from a noexcept context: counts it and logs the first one.
inline void report_free_error(const char* what) noexcept {
  if (detail::free_errors().fetch_add(1, std::memory_order_relaxed) == 0)
    std::fprintf(stderr,
                 "siam: freeing device memory failed: %s (further failures are only counted: "
                 "siam::cuda::free_error_count())\n",
                 what);
}

/// Move-only owner of `size()` elements of T in device memory from the pool of the device that was
/// current at construction; returned to that pool whichever device is current later. Contents
/// are uninitialized.
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

  /// Returns the memory to its pool (stream-ordered) and leaves the buffer empty. A failed free
  /// (a CUDA error) is counted and logged (free_error_count()), never thrown.
  void reset() noexcept {
    if (data_ != nullptr) {
      try {
        pool_->deallocate(data_, size_ * sizeof(T));
      } catch (const std::exception& e) {
        report_free_error(e.what());
      }
    }
    pool_ = nullptr;
    data_ = nullptr;
    size_ = 0;
  }

 private:
  detail::DevicePool* pool_ = nullptr;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Move-only owner of `size()` elements of page-locked (pinned) host memory, which the GPU reads
/// and writes by DMA without staging. Contents are uninitialized.
template <class T>
class PinnedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "PinnedBuffer holds trivially copyable types");

 public:
  PinnedBuffer() noexcept = default;
  explicit PinnedBuffer(std::size_t n) : size_(n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw value_error("PinnedBuffer of " + std::to_string(n) + " elements overflows size_t");
    if (n == 0) return;
    require_device();
    void* p = nullptr;
    SIAM_CUDA_CHECK(cudaHostAlloc(&p, n * sizeof(T), cudaHostAllocDefault));
    data_.reset(p);
  }
  T* data() noexcept { return static_cast<T*>(data_.get()); }
  const T* data() const noexcept { return static_cast<const T*>(data_.get()); }
  std::size_t size() const noexcept { return size_; }
  T& operator[](std::size_t i) noexcept { return data()[i]; }
  const T& operator[](std::size_t i) const noexcept { return data()[i]; }

 private:
  detail::UniquePinned data_;
  std::size_t size_ = 0;
};

/// std::pmr::memory_resource over page-locked host memory (cudaHostAlloc / cudaFreeHost), for
/// containers whose contents go to the device whole and often (the image loader's ready
/// batches: data::LoaderOptions::memory). Stateless; every instance is interchangeable.
class PinnedMemoryResource final : public std::pmr::memory_resource {
 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (alignment > 4096)  // cudaHostAlloc returns page-aligned memory
      throw value_error("PinnedMemoryResource: alignment " + std::to_string(alignment) +
                        " above the page size");
    require_device();
    void* p = nullptr;
    SIAM_CUDA_CHECK(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault));
    return p;
  }
  void do_deallocate(void* p, std::size_t, std::size_t) override { (void)cudaFreeHost(p); }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return dynamic_cast<const PinnedMemoryResource*>(&other) != nullptr;
  }
};

/// The process's PinnedMemoryResource.
inline PinnedMemoryResource& pinned_memory() {
  static PinnedMemoryResource resource;
  return resource;
}

// ---------------------------------------------------------------------------------------------
// Events

/// RAII CUDA event, for ordering against or timing work on a stream.
class Event {
 public:
  /// `timing` enables elapsed_ms(); events without it are cheaper to record and wait on.
  explicit Event(bool timing = false)
      : event_(detail::make_event(timing ? cudaEventDefault : cudaEventDisableTiming)) {}
  /// Captures the work queued on `s` so far.
  void record(cudaStream_t s) { SIAM_CUDA_CHECK(cudaEventRecord(event_.get(), s)); }
  /// Makes `s` wait (on the device) for the captured work.
  void wait(cudaStream_t s) { SIAM_CUDA_CHECK(cudaStreamWaitEvent(s, event_.get(), 0)); }
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
//
// When each host-to-device copy is synchronous:
//   copy_to_device        waits for the copy (and all work queued before it).
//   upload                returns once `src` has been read into the pinned staging ring; waits
//                         only while the ring is full. Source: any host memory.
//   copy_to_device_async  never waits; `src` must be pinned and stay unchanged until the stream
//                         has passed the copy (record an Event after it).

/// Host -> device. Returns once the copy is complete, so `src` may be reused at once.
template <class T>
void copy_to_device(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  const cudaStream_t s = stream();
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
  SIAM_CUDA_CHECK(cudaStreamSynchronize(s));
}

/// Host -> device through the context's pinned staging ring (detail::StagingRing): `src` (pageable
/// or pinned) may be reused as soon as this returns; the DMA is queued on stream() behind earlier
/// work. The host waits only when 4 MiB or 64 copies are still queued, for the oldest of them.
///
/// During a cuda::Graph capture the ring cannot serve (its slots are reused, and a replay would
/// copy whatever a later upload left there): the data is copied into page-locked memory that the
/// graph owns, and every replay copies that same data again (it is part of the graph, like a
/// kernel argument). Data that changes between replays belongs in device memory written before
/// each replay. cuda_error during a capture that cuda::Graph did not start.
template <class T>
void upload(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  Context& ctx = context();
  if (!ctx.pool().capturing()) return ctx.staging().upload(dst, src, n * sizeof(T), ctx.stream());
  std::vector<detail::UniquePinned>* store = ctx.capture_store();
  if (store == nullptr)
    throw cuda_error("upload of " + std::to_string(n * sizeof(T)) +
                     " bytes during a stream capture that cuda::Graph did not start");
  // cudaHostAlloc is not a stream operation, but a capture in thread-local mode refuses it as
  // potentially unsafe: allow it for this call only (the documented push/pop of the mode).
  void* h = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  SIAM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  const cudaError_t allocated = cudaHostAlloc(&h, n * sizeof(T), cudaHostAllocDefault);
  SIAM_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  SIAM_CUDA_CHECK(allocated);
  store->emplace_back(h);
  std::memcpy(h, src, n * sizeof(T));
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, h, n * sizeof(T), cudaMemcpyHostToDevice, ctx.stream()));
}

/// Host -> device without any wait: `src` must be page-locked (PinnedBuffer, cudaHostAlloc or
/// cudaHostRegister; value_error otherwise) and must stay unchanged until stream() has passed the
/// copy: record an Event after this call and synchronize it (or the stream) before writing `src`.
template <class T>
void copy_to_device_async(T* dst, const T* src, std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n == 0) return;
  cudaPointerAttributes attr{};
  SIAM_CUDA_CHECK(cudaPointerGetAttributes(&attr, src));
  if (attr.type != cudaMemoryTypeHost)
    throw value_error("copy_to_device_async: the source of " + std::to_string(n * sizeof(T)) +
                      " bytes is not page-locked host memory (use upload or copy_to_device)");
  SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, stream()));
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

}  // namespace siam::cuda

// The CUDA runtime layer of siam's GPU backend: checked CUDA/cuBLAS calls, device discovery, a
// lazily created per-device context (one stream, one cuBLAS handle, a stream-ordered memory pool
// and a pinned staging ring), host/device copies, launch checks and a row-major GEMM. The
// backend's expression kernels sit on top of it. docs/cuda.md describes the design.
//
// Ordering model (read this before adding a kernel): everything siam does on a device is issued
// on that device's single context stream, `stream()`, from any number of host threads. Device
// memory is allocated and freed in stream order (cudaMallocFromPoolAsync / cudaFreeAsync on that
// stream), so a block handed back may be handed out again at once: later work that writes it is
// queued behind the work still reading it. Work on any OTHER stream that uses pool memory must be
// declared with record_stream(block, other_stream); the block's free then waits for it.
//
// Only host code lives here: the header compiles under nvcc and under a plain C++20 compiler that
// sees the CUDA runtime and cuBLAS headers (link with -lcudart -lcublas).
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
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "siam/backend/precision.hpp"
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

/// Allocation statistics of one device's pool.
struct PoolStats {
  /// Allocations that grew the pool's reserved device memory (the driver had to map more). A
  /// training loop is in a steady state when this stops growing. (The name is historical: the
  /// pool maps memory through the stream-ordered allocator, not cudaMalloc.)
  std::size_t cuda_malloc_calls = 0;
  std::size_t allocations = 0;          // allocate() calls that returned memory
  std::size_t deallocations = 0;        // blocks handed back (their frees queued on the stream)
  std::size_t bytes_in_use = 0;         // requested bytes handed out and not yet returned
  std::size_t peak_bytes_in_use = 0;    // high-water mark of bytes_in_use
  std::size_t bytes_reserved = 0;       // device memory the pool holds: in use plus cached
  std::size_t peak_bytes_reserved = 0;  // high-water mark of bytes_reserved (driver's count)
  std::size_t bytes_cached = 0;         // reserved but not in use (driver's count)
  std::size_t cache_limit = 0;          // release threshold (see set_cache_limit)
  std::size_t oom_retries = 0;          // out-of-memory retries after trimming the cache
  std::size_t cross_stream_frees = 0;   // frees that waited for other streams (record_stream)
};

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

/// Device memory of one device, from a private stream-ordered memory pool (cudaMemPool_t).
///
/// Why the driver's stream-ordered allocator rather than a hand-made cache with an event per
/// block: it already splits and merges blocks (size classes with splitting), trims without
/// blocking the device (cudaMemPoolTrimTo instead of cudaFree), is legal inside CUDA graph
/// capture, and orders reuse by the stream: a block freed with cudaFreeAsync on the context
/// stream is reused only by work queued after the free. What the driver cannot know is that a
/// block was also used on another stream (NCCL, a copy stream, a user's stream): record_stream()
/// notes that stream, and the free then makes the context stream wait for an event recorded on it
/// before queueing cudaFreeAsync (the idea of PyTorch's recordStream; the cost is that later work
/// on the context stream also waits for that stream's work up to the free).
///
/// Release policy: the pool keeps freed memory reserved for reuse up to the cache limit
/// (cudaMemPoolAttrReleaseThreshold, default half the device's memory): at each synchronisation
/// (stream, event or device) the driver returns reserved memory above the limit to the system.
/// On out-of-memory the pool waits for its stream, trims the cache to nothing and retries once;
/// a second failure throws cuda_out_of_memory. release_cached() trims on demand. Thread-safe.
class DevicePool {
 public:
  DevicePool(int device, cudaStream_t stream) : device_(device), stream_(stream) {
    DeviceGuard guard(device);
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    SIAM_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    pool_.reset(pool);
    std::size_t free_bytes = 0, total_bytes = 0;
    SIAM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    set_cache_limit(total_bytes / 2);
    event_ = make_event();
  }
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;
  ~DevicePool() {
    // Best effort: errors cannot be reported from a destructor. Blocks still handed out keep the
    // pool alive in the driver until they are freed; cudaMemPoolDestroy defers until then.
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  }

  int device() const noexcept { return device_; }

  /// A block of `bytes` bytes (nullptr for 0), usable by work queued on the context stream from
  /// now on. Throws cuda_out_of_memory when the device cannot supply it even after trimming.
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t status = cudaMallocFromPoolAsync(&p, bytes, pool_.get(), stream_);
    const bool in_capture = capturing();
    if (status == cudaErrorMemoryAllocation && in_capture) {
      // A capture may not synchronise: no trim-and-retry; the capture fails, typed.
      (void)cudaGetLastError();
      throw cuda_out_of_memory("device allocation of " + std::to_string(bytes) +
                                   " bytes failed on device " + std::to_string(device_) +
                                   " during a CUDA graph capture (no retry: a capture cannot "
                                   "synchronise to release the cache)",
                               device_, bytes, 0, 0);
    }
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // out-of-memory is not sticky; clear it before retrying
      ++stats_.oom_retries;
      // Frees queued on the stream become trimmable once the stream has passed them.
      SIAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      SIAM_CUDA_CHECK(cudaMemPoolTrimTo(pool_.get(), 0));
      status = cudaMallocFromPoolAsync(&p, bytes, pool_.get(), stream_);
      if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        std::size_t free_bytes = 0, total_bytes = 0;
        (void)cudaMemGetInfo(&free_bytes, &total_bytes);
        throw cuda_out_of_memory(
            "device allocation of " + std::to_string(bytes) + " bytes failed on device " +
                std::to_string(device_) + ": out of memory even after releasing the cache (" +
                std::to_string(free_bytes) + " bytes free of " + std::to_string(total_bytes) +
                ", " + std::to_string(stats_.bytes_in_use) + " bytes in use by siam)",
            device_, bytes, free_bytes, total_bytes);
      }
    }
    cuda::throw_on_cuda_error(status, "cudaMallocFromPoolAsync", __FILE__, __LINE__);
    try {
      live_.emplace(p, Block{bytes, {}});
    } catch (...) {
      (void)cudaFreeAsync(p, stream_);
      throw;
    }
    ++stats_.allocations;
    stats_.bytes_in_use += bytes;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    // The driver refuses pool queries from a capturing thread (cudaErrorStreamCaptureUnsupported):
    // inside a capture the allocation is a graph node anyway, not a reservation growth.
    if (!in_capture) {
      const std::size_t reserved = attribute(cudaMemPoolAttrReservedMemCurrent);
      if (reserved > reserved_seen_) ++stats_.cuda_malloc_calls;
      reserved_seen_ = reserved;
    }
    return p;
  }

  /// Whether `p` is a block this pool handed out and that was not returned yet.
  bool owns(const void* p) const {
    std::lock_guard lock(mutex_);
    return live_.count(const_cast<void*>(p)) != 0;
  }

  /// Returns `p` (from allocate(`bytes`)) to the pool: its free is queued on the context stream
  /// after every stream recorded with record_stream(). Returns false, doing nothing, when `p` is
  /// not a live block of this pool; throws value_error when `bytes` does not match its size.
  bool try_deallocate(void* p, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) return false;
    if (it->second.bytes != bytes)
      throw value_error(
          "deallocate: " + std::to_string(bytes) + " bytes does not match the allocation of " +
          std::to_string(it->second.bytes) + " bytes on device " + std::to_string(device_));
    const Block block = std::move(it->second);
    live_.erase(it);
    stats_.bytes_in_use -= block.bytes;
    ++stats_.deallocations;
    DeviceGuard guard(device_);
    for (cudaStream_t s : block.streams) {
      // One event serves every wait: cudaStreamWaitEvent captures the event's latest record at
      // the call, so recording it again afterwards does not affect waits already queued.
      SIAM_CUDA_CHECK(cudaEventRecord(event_.get(), s));
      SIAM_CUDA_CHECK(cudaStreamWaitEvent(stream_, event_.get(), 0));
    }
    if (!block.streams.empty()) ++stats_.cross_stream_frees;
    SIAM_CUDA_CHECK(cudaFreeAsync(p, stream_));
    return true;
  }

  /// Returns `p` like try_deallocate; value_error when this pool does not own it.
  void deallocate(void* p, std::size_t bytes) {
    if (p == nullptr) return;
    if (!try_deallocate(p, bytes))
      throw value_error("deallocate: pointer was not allocated by the pool of device " +
                        std::to_string(device_));
  }

  /// Notes that work queued on `s` uses block `p` (as returned by allocate: not an interior
  /// pointer): its free will wait for all work queued on `s` until then. No-op for the context
  /// stream and for nullptr; value_error for a pointer this pool does not own.
  void record_stream(const void* p, cudaStream_t s) {
    if (p == nullptr || s == stream_) return;
    std::lock_guard lock(mutex_);
    const auto it = live_.find(const_cast<void*>(p));
    if (it == live_.end())
      throw value_error("record_stream: pointer is not a live block of the pool of device " +
                        std::to_string(device_) + " (pass the start of an allocation)");
    auto& streams = it->second.streams;
    if (std::find(streams.begin(), streams.end(), s) == streams.end()) streams.push_back(s);
  }

  /// Returns every cached (freed) block to the system; blocks in use are kept. Waits for the
  /// context stream, since its queued frees are only then complete; does not block the device.
  ///
  /// The pool reserves device memory in chunks (the driver's granularity, typically 2 or 32 MiB):
  /// a chunk that still holds a block in use cannot be returned, so bytes_cached reaches 0 only
  /// when no block is in use, and otherwise stays below one chunk per live block. value_error
  /// while the stream is being captured (a capture cannot synchronise).
  void release_cached() {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (capturing())
      throw value_error("release_cached: the context stream is being captured into a CUDA graph");
    SIAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    SIAM_CUDA_CHECK(cudaMemPoolTrimTo(pool_.get(), 0));
    reserved_seen_ = attribute(cudaMemPoolAttrReservedMemCurrent);
  }

  /// Sets how many bytes the pool may keep reserved across a synchronisation (see the class).
  void set_cache_limit(std::size_t bytes) {
    std::uint64_t v = bytes;
    SIAM_CUDA_CHECK(cudaMemPoolSetAttribute(pool_.get(), cudaMemPoolAttrReleaseThreshold, &v));
    std::lock_guard lock(mutex_);
    stats_.cache_limit = bytes;
  }

  /// The counters, and the driver's reservation figures as last read. While the context stream
  /// is being captured the driver refuses pool queries, so the reservation figures are those of
  /// the last call made outside a capture.
  cuda::PoolStats stats() const {
    std::lock_guard lock(mutex_);
    cuda::PoolStats s = stats_;
    if (capturing()) {
      s.bytes_reserved = last_reserved_;
      s.peak_bytes_reserved = last_peak_reserved_;
      s.bytes_cached = last_cached_;
      return s;
    }
    s.bytes_reserved = attribute(cudaMemPoolAttrReservedMemCurrent);
    s.peak_bytes_reserved = attribute(cudaMemPoolAttrReservedMemHigh);
    const std::size_t used = attribute(cudaMemPoolAttrUsedMemCurrent);
    s.bytes_cached = s.bytes_reserved > used ? s.bytes_reserved - used : 0;
    last_reserved_ = s.bytes_reserved;
    last_peak_reserved_ = s.peak_bytes_reserved;
    last_cached_ = s.bytes_cached;
    return s;
  }

  /// Whether the context stream is being captured into a CUDA graph (cudaStreamIsCapturing,
  /// which is legal during a capture). While it is, nothing may synchronise or query the pool.
  bool capturing() const {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    SIAM_CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
    return status != cudaStreamCaptureStatusNone;
  }

 private:
  struct Block {
    std::size_t bytes;
    std::vector<cudaStream_t> streams;  // other streams that used the block (record_stream)
  };

  std::size_t attribute(cudaMemPoolAttr which) const {
    std::uint64_t v = 0;
    SIAM_CUDA_CHECK(cudaMemPoolGetAttribute(pool_.get(), which, &v));
    return static_cast<std::size_t>(v);
  }

  int device_;
  cudaStream_t stream_;  // owned by the context
  UniqueMemPool pool_;
  UniqueEvent event_;  // recorded on record_stream()'d streams at free time
  mutable std::mutex mutex_;
  std::unordered_map<void*, Block> live_;
  std::size_t reserved_seen_ = 0;
  cuda::PoolStats stats_;
  mutable std::size_t last_reserved_ = 0, last_peak_reserved_ = 0, last_cached_ = 0;
};

/// Pinned host memory through which host-to-device copies go, as a ring: a copy takes the next
/// free range, copies the host data into it, queues the DMA on the stream and records an event
/// that guards the range. The host waits only when the ring is full (kCapacity bytes or
/// kMaxInFlight copies still queued), for the oldest copies. So the caller's source may be reused
/// as soon as upload() returns, and the host never waits on the stream otherwise. Thread-safe.
class StagingRing {
 public:
  static constexpr std::size_t kCapacity = std::size_t{4} << 20;
  static constexpr std::size_t kChunk = kCapacity / 2;  // larger copies go in pieces
  static constexpr std::size_t kMaxInFlight = 64;

  explicit StagingRing(int device) : device_(device) {}
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  void upload(void* dst, const void* src, std::size_t bytes, cudaStream_t s) {
    if (bytes == 0) return;
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (!host_) {
      void* h = nullptr;
      SIAM_CUDA_CHECK(cudaHostAlloc(&h, kCapacity, cudaHostAllocDefault));
      host_.reset(h);
    }
    auto* out = static_cast<unsigned char*>(dst);
    const auto* in = static_cast<const unsigned char*>(src);
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t len = std::min(kChunk, bytes - done);
      if (head_ + len > kCapacity) head_ = 0;
      wait_for_room(head_, head_ + len);
      auto* staged = static_cast<unsigned char*>(host_.get()) + head_;
      std::memcpy(staged, in + done, len);
      SIAM_CUDA_CHECK(cudaMemcpyAsync(out + done, staged, len, cudaMemcpyHostToDevice, s));
      UniqueEvent ev = spare_.empty() ? make_event() : take_spare();
      SIAM_CUDA_CHECK(cudaEventRecord(ev.get(), s));
      in_flight_.push_back({head_, head_ + len, std::move(ev)});
      head_ += len;
      done += len;
    }
  }

  /// Copies whose staging range is still guarded (for tests).
  std::size_t in_flight() const {
    std::lock_guard lock(mutex_);
    return in_flight_.size();
  }

 private:
  struct Range {
    std::size_t begin, end;
    UniqueEvent done;
  };

  UniqueEvent take_spare() {
    UniqueEvent e = std::move(spare_.back());
    spare_.pop_back();
    return e;
  }

  // All copies go through one stream, so they finish in queue order: waiting for the oldest
  // range until none overlaps [begin, end) frees exactly what is needed.
  void wait_for_room(std::size_t begin, std::size_t end) {
    const auto overlaps = [&] {
      for (const Range& r : in_flight_)
        if (r.begin < end && begin < r.end) return true;
      return false;
    };
    while (!in_flight_.empty() && (in_flight_.size() >= kMaxInFlight || overlaps())) {
      SIAM_CUDA_CHECK(cudaEventSynchronize(in_flight_.front().done.get()));
      spare_.push_back(std::move(in_flight_.front().done));
      in_flight_.pop_front();
    }
  }

  int device_;
  mutable std::mutex mutex_;
  UniquePinned host_;
  std::size_t head_ = 0;
  std::deque<Range> in_flight_;
  std::vector<UniqueEvent> spare_;
};

}  // namespace siam::detail

namespace siam::cuda {

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

// ---------------------------------------------------------------------------------------------
// GEMM

}  // namespace siam::cuda

namespace siam::detail {

/// Throws value_error for negative sizes, leading dimensions below a row's length or null
/// pointers of a non-empty product; all sizes are 64-bit.
inline void check_gemm_dims(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                            std::int64_t k, const void* A, std::int64_t lda, const void* B,
                            std::int64_t ldb, const void* C, std::int64_t ldc) {
  const auto dims = [](std::int64_t r, std::int64_t c) {
    return std::to_string(r) + " x " + std::to_string(c);
  };
  if (m < 0 || n < 0 || k < 0)
    throw value_error("gemm: negative size m=" + std::to_string(m) + " n=" + std::to_string(n) +
                      " k=" + std::to_string(k));
  // Row-major: the leading dimension is the stride between rows, at least one row's length.
  const auto check_ld = [&](const char* name, std::int64_t ld, std::int64_t rows,
                            std::int64_t cols) {
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
void scale_rows(cuda::Context& ctx, std::int64_t m, std::int64_t n, T beta, T* C,
                std::int64_t ldc) {
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
  std::lock_guard lock(ctx.cublas_mutex());
  if (ldc == n) {
    scal(C, m * n);  // rows are contiguous: one call
  } else {
    for (std::int64_t r = 0; r < m; ++r)
      scal(C + static_cast<std::size_t>(r) * static_cast<std::size_t>(ldc), n);
  }
}

}  // namespace siam::detail

namespace siam::cuda {

/// The cuBLAS compute type of a GEMM in T under `p`: FP64 always for double; FP32 without
/// tensor cores, TF32 or BF16 tensor cores for float.
template <class T>
cublasComputeType_t compute_type(MatmulPrecision p) noexcept {
  if constexpr (!std::is_same_v<T, float>) {
    return CUBLAS_COMPUTE_64F_PEDANTIC;
  } else {
    return p == MatmulPrecision::high     ? CUBLAS_COMPUTE_32F_FAST_TF32
           : p == MatmulPrecision::medium ? CUBLAS_COMPUTE_32F_FAST_16BF
                                          : CUBLAS_COMPUTE_32F_PEDANTIC;
  }
}

/// C = alpha * op(A) * op(B) + beta * C on the current device's stream, for float and double.
/// All matrices are row-major with row strides lda/ldb/ldc; op(A) is m x k (A is stored m x k, or
/// k x m when trans_a), op(B) is k x n (stored k x n, or n x k when trans_b), C is m x n.
/// Sizes are 64-bit and go to cuBLAS's 64-bit entry point (cublasGemmEx_64), so products with a
/// dimension above 2^31 need no split. m, n or k may be 0: then nothing is launched, except that
/// k == 0 still sets C = beta * C. float runs in plain FP32 (pedantic) unless
/// set_matmul_precision() chose TF32 or BF16 tensor cores; double in FP64. Throws value_error for
/// negative sizes or leading dimensions below a row's length, cuda_error for cuBLAS failures.
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
          std::int64_t ldc) {
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
  std::lock_guard lock(ctx.cublas_mutex());
  const cublasComputeType_t compute = compute_type<T>(ctx.matmul_precision());
  // The one place where row-major meets cuBLAS's column-major: a row-major r x c matrix with row
  // stride ld is, byte for byte, the column-major c x r matrix X^T with leading dimension ld. So
  // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A, n before m,
  // and keep each operand's own transpose flag.
  const auto op = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  SIAM_CUBLAS_CHECK(cublasGemmEx_64(ctx.cublas(), op(trans_b), op(trans_a), n, m, k, &alpha, B,
                                    type, ldb, A, type, lda, &beta, C, type, ldc, compute,
                                    CUBLAS_GEMM_DEFAULT));
}

/// Row-major C[m x n] (FP32) = alpha * op(A) * op(B) + beta * C where A and B are BF16
/// (CUDA_R_16BF, 2 bytes an element, e.g. FP32 inputs rounded by a kernel) and products
/// accumulate in FP32 (CUBLAS_COMPUTE_32F). Layout as in gemm(). This is how the backend runs
/// the BF16 mode: CUBLAS_COMPUTE_32F_FAST_16BF only *allows* cuBLAS to round FP32 inputs to
/// BF16, and a kernel it picks may keep TF32 instead, so the rounding is done explicitly.
inline void gemm_bf16_inputs(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                             std::int64_t k, float alpha, const void* A, std::int64_t lda,
                             const void* B, std::int64_t ldb, float beta, float* C,
                             std::int64_t ldc) {
  detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
  if (m == 0 || n == 0) return;
  Context& ctx = context();
  if (k == 0) {
    detail::scale_rows(ctx, m, n, beta, C, ldc);
    return;
  }
  std::lock_guard lock(ctx.cublas_mutex());
  const auto op = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  SIAM_CUBLAS_CHECK(cublasGemmEx_64(ctx.cublas(), op(trans_b), op(trans_a), n, m, k, &alpha, B,
                                    CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F,
                                    ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/// Row-major Y[m x n] = act(X[m x k] W[k x n] + 1 bias[n]) in one cuBLASLt call whose epilogue
/// adds the bias and, when `relu`, applies max(., 0) while the tile is still in registers: no
/// second pass over Y. Same precision modes as gemm(). Returns false, having done nothing, when
/// cuBLASLt offers no algorithm for this case (the caller then runs gemm() and a pass); throws
/// cuda_error when the call itself fails. Not for m, n or k of 0. In the BF16 mode (medium) it
/// always declines for float, so the caller's gemm rounds the inputs to BF16 explicitly.
template <class T>
bool gemm_bias(bool relu, std::int64_t m, std::int64_t n, std::int64_t k, const T* X,
               std::int64_t ldx, const T* W, std::int64_t ldw, const T* bias, T* Y,
               std::int64_t ldy) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "siam::cuda::gemm_bias supports float and double");
  if (m <= 0 || n <= 0 || k <= 0) return false;
  constexpr bool is_float = std::is_same_v<T, float>;
  constexpr cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  Context& ctx = context();
  if (is_float && ctx.matmul_precision() == MatmulPrecision::medium) return false;
  const cublasComputeType_t compute = compute_type<T>(ctx.matmul_precision());
  std::lock_guard lock(ctx.cublas_mutex());  // one cuBLAS(Lt) user of the context at a time
  // Column-major view, as in gemm(): Y^T [n x m] = W^T [n x k] X^T [k x m]; the bias runs along
  // Y^T's rows, which is what the BIAS epilogues broadcast (a vector of length "M" = n).
  cublasLtMatmulDesc_t d = nullptr;
  if (cublasLtMatmulDescCreate(&d, compute, type) != CUBLAS_STATUS_SUCCESS) return false;
  const detail::UniqueLtDesc desc(d);
  const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  SIAM_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  SIAM_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const auto layout = [&](std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    cublasLtMatrixLayout_t l = nullptr;
    SIAM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<std::uint64_t>(rows),
                                                 static_cast<std::uint64_t>(cols), ld));
    return detail::UniqueLtLayout(l);
  };
  const auto a = layout(n, k, ldw), b = layout(k, m, ldx), c = layout(n, m, ldy);
  // The heuristic assumes 256-byte aligned pointers unless told otherwise: tell it what these
  // pointers really allow (views into a buffer may start anywhere).
  const auto align = [](const void* ptr) {
    const auto u = reinterpret_cast<std::uintptr_t>(ptr);
    std::int64_t a = 256;
    while (a > 1 && u % static_cast<std::uintptr_t>(a) != 0)
      a /= 2;
    return a;
  };
  const Context::LtKey key{m,    n,       k,    ldx,      ldw,      ldy,
                           relu, compute, type, align(X), align(W), align(Y)};
  auto& plans = ctx.lt_plans();
  auto plan = plans.find(key);
  if (plan == plans.end()) {
    // 4 MiB of workspace at most (split-K kernels); it comes from the pool in stream order.
    constexpr std::size_t workspace_bytes = std::size_t{4} << 20;
    cublasLtMatmulPreference_t p = nullptr;
    SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    const detail::UniqueLtPreference pref(p);
    SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, std::int64_t> aligned[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key[10]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key[9]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key[11]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key[11]}};
    for (const auto& [attr, bytes] : aligned) {
      const auto v = static_cast<std::uint32_t>(bytes);
      SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof v));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const bool ok =
        cublasLtMatmulAlgoGetHeuristic(ctx.cublas_lt(), d, a.get(), b.get(), c.get(), c.get(), p, 1,
                                       &result, &found) == CUBLAS_STATUS_SUCCESS &&
        found > 0;
    plan = plans.emplace(key, ok ? std::optional(result) : std::nullopt).first;
  }
  if (!plan->second) return false;
  const cublasLtMatmulHeuristicResult_t& result = *plan->second;
  void* workspace = result.workspaceSize ? ctx.pool().allocate(result.workspaceSize) : nullptr;
  const T one = 1, zero = 0;
  const cublasStatus_t status =
      cublasLtMatmul(ctx.cublas_lt(), d, &one, W, a.get(), X, b.get(), &zero, Y, c.get(), Y,
                     c.get(), &result.algo, workspace, result.workspaceSize, ctx.stream());
  if (workspace) ctx.pool().deallocate(workspace, result.workspaceSize);
  SIAM_CUBLAS_CHECK(status);
  return true;
}

}  // namespace siam::cuda

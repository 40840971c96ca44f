// The memory pool of one device: stream-ordered allocation (cudaMallocFromPoolAsync /
// cudaFreeAsync on the context stream), record_stream for other streams, a cache limit, one
// retry on out-of-memory, and its statistics (PoolStats).
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "siam/backend/cuda_device.hpp"

namespace siam::cuda {

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

}  // namespace siam::cuda

namespace siam::detail {

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

}  // namespace siam::detail

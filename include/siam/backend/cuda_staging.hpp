// The pinned staging ring through which host-to-device copies go (StagingRing).
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "siam/backend/cuda_device.hpp"

namespace siam::detail {

/// Pinned host memory through which host-to-device copies go, as a ring: a copy takes the next
/// free range, copies the host data into it, queues the DMA on the stream and records an event
/// that guards the range. The host waits only when the ring is full (capacity bytes or
/// max_in_flight copies still queued), for the oldest copies. So the caller's source may be reused
/// as soon as upload() returns, and the host never waits on the stream otherwise. Thread-safe.
class StagingRing {
 public:
  static constexpr std::size_t capacity = std::size_t{4} << 20;
  static constexpr std::size_t chunk = capacity / 2;  // larger copies go in pieces
  static constexpr std::size_t max_in_flight = 64;

  explicit StagingRing(int device) : device_(device) {}
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  void upload(void* dst, const void* src, std::size_t bytes, cudaStream_t s) {
    if (bytes == 0) return;
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (!host_) {
      void* h = nullptr;
      SIAM_CUDA_CHECK(cudaHostAlloc(&h, capacity, cudaHostAllocDefault));
      host_.reset(h);
    }
    auto* out = static_cast<unsigned char*>(dst);
    const auto* in = static_cast<const unsigned char*>(src);
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t len = std::min(chunk, bytes - done);
      if (head_ + len > capacity) head_ = 0;
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
    while (!in_flight_.empty() && (in_flight_.size() >= max_in_flight || overlaps())) {
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

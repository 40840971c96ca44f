// CUDA graphs of siam work: everything a callable queues on the current device's stream is
// captured once (nothing runs during the capture) and replayed with one cudaGraphLaunch.
// Replays read and write the same device addresses as the captured work and use the kernel
// arguments it was captured with: scalars that change between replays must live in device
// memory. Allocations made during the capture become the graph's own (freed on relaunch:
// cudaGraphInstantiateFlagAutoFreeOnLaunch). The capture runs in thread-local mode, so an
// operation that cannot be captured (a host synchronisation, cudaMalloc, a pageable copy) fails
// the capture with a cuda_error naming the CUDA error, and nothing is left half-captured.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "siam/backend/cuda_runtime.hpp"

namespace siam::detail {
struct GraphDeleter {
  void operator()(cudaGraph_t g) const noexcept { (void)cudaGraphDestroy(g); }
};
struct GraphExecDeleter {
  void operator()(cudaGraphExec_t e) const noexcept { (void)cudaGraphExecDestroy(e); }
};
using UniqueGraph = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;
using UniqueGraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;
}  // namespace siam::detail

namespace siam::cuda {

class Graph {
 public:
  /// Captures what `work` queues on the current device's stream(). Throws cuda_error if the
  /// capture or the instantiation fails (the graph is then empty), or whatever `work` throws.
  void capture(const std::function<void()>& work) {
    reset();
    if (sync_check_enabled())
      throw value_error(
          "CUDA graph capture is not possible with SIAM_CUDA_SYNC_CHECK=1: it synchronises "
          "after every launch");
    Context& ctx = context();
    const cudaStream_t s = ctx.stream();
    SIAM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    ctx.set_capture_store(&host_data_);  // uploads during the capture are kept here
    try {
      work();
    } catch (...) {
      ctx.set_capture_store(nullptr);
      end_capture(s);  // discards the partial graph
      host_data_.clear();
      throw;
    }
    ctx.set_capture_store(nullptr);
    detail::UniqueGraph graph = end_capture(s);
    if (!graph) host_data_.clear();
    if (!graph)
      throw cuda_error(
          "CUDA graph capture failed: the captured work synchronised with the host, allocated "
          "outside the stream or used another stream (" +
          capture_error_ + ")");
    cudaGraphExec_t exec = nullptr;
    SIAM_CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph.get(),
                                                  cudaGraphInstantiateFlagAutoFreeOnLaunch));
    exec_.reset(exec);
    std::size_t n = 0;
    SIAM_CUDA_CHECK(cudaGraphGetNodes(graph.get(), nullptr, &n));
    nodes_ = n;
    graph_ = std::move(graph);
    device_ = ctx.device();
  }

  /// Queues one replay on the capturing device's stream (asynchronous to the host). Throws
  /// value_error before a capture, cuda_error if the launch fails.
  void replay() const {
    if (!exec_) throw value_error("cuda::Graph::replay: nothing was captured");
    detail::DeviceGuard guard(device_);
    const cudaStream_t s = stream();
    SIAM_CUDA_CHECK(cudaGraphLaunch(exec_.get(), s));
    check_launch("CUDA graph", s);
  }

  bool captured() const noexcept { return static_cast<bool>(exec_); }
  void reset() noexcept {
    if (!host_data_.empty() && exec_) {
      // A queued replay may still copy from the graph's host data: let it finish first.
      if (Context* c = detail::existing_context(device_)) (void)cudaStreamSynchronize(c->stream());
    }
    exec_.reset();
    graph_.reset();
    host_data_.clear();
    nodes_ = 0;
  }
  ~Graph() { reset(); }
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  /// Host uploads made during the capture (page-locked copies that every replay reads again).
  std::size_t host_data_blocks() const noexcept { return host_data_.size(); }
  /// Operations (kernels, copies, memsets, allocations) in the captured graph.
  std::size_t nodes() const noexcept { return nodes_; }

 private:
  detail::UniqueGraph end_capture(cudaStream_t s) {
    cudaGraph_t g = nullptr;
    const cudaError_t status = cudaStreamEndCapture(s, &g);
    detail::UniqueGraph graph(g);
    if (status != cudaSuccess) {
      capture_error_ = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
      (void)cudaGetLastError();  // clear the error state: later calls must not be blamed for it
      return nullptr;
    }
    return graph;
  }

  detail::UniqueGraph graph_;
  detail::UniqueGraphExec exec_;
  std::size_t nodes_ = 0;
  int device_ = 0;
  std::vector<detail::UniquePinned> host_data_;  // uploads made during the capture
  std::string capture_error_;
};

}  // namespace siam::cuda

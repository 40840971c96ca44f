// The host backends' stand-in for a captured GPU step (see cuda::Graph): it keeps the work
// and replays it by calling it again. Code written for capture-and-replay (the trainer's
// graph mode) therefore runs unchanged, and is tested, on the CPU.
#pragma once

#include <cstddef>
#include <functional>
#include <utility>

#include "siam/error.hpp"

namespace siam::detail {

class ReplayGraph {
 public:
  /// Records `work` without running it (as a GPU capture records without executing).
  void capture(std::function<void()> work) { work_ = std::move(work); }
  /// Runs the recorded work once. Throws value_error before any capture().
  void replay() const {
    if (!work_) throw value_error("StepGraph::replay: nothing was captured");
    work_();
  }
  bool captured() const noexcept { return static_cast<bool>(work_); }
  void reset() noexcept { work_ = nullptr; }
  /// Operations in the graph (none are recorded on the host).
  std::size_t nodes() const noexcept { return 0; }

 private:
  std::function<void()> work_;
};

}  // namespace siam::detail

// The trainer's graph mode (TrainerOptions::graph): the step's device work (forward, loss,
// backward, finite check, update) is captured once and replayed every iteration: one CUDA
// graph launch per step on the GPU, a plain re-run on the CPU (backend/step_graph.hpp).
//
// The first step runs the work eagerly (so every buffer it needs exists), the second captures
// it, later steps replay. A step recaptures only when the batch's or a parameter's buffer
// moved (the captured work reads them by address). Per step the caller draws the batch and
// sets the learning rate; step() uploads the optimizer's two scalar rows (apply, skip) and
// replays. With the finite check the work computes ok = finite(probe) * ok (sticky), picks
// the apply or the skip row by it and counts the applied steps, all on the device; settle()
// reads that count back and takes the skipped steps back from the optimizer.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "siam/optim/optimizer.hpp"
#include "siam/train/batches.hpp"

namespace siam {

template <class T, class B>
class GraphStep {
 public:
  /// A piece of the captured work: forward, loss and backward of the current batch, returning
  /// the loss (one element on B); or the finite probe, returning one element on B that is 0
  /// when the loss and every gradient are finite and NaN otherwise.
  using Work = std::function<View<T, B>()>;

  GraphStep(Work forward_backward, Work probe)
      : forward_backward_(std::move(forward_backward)), probe_(std::move(probe)) {}
  GraphStep(const GraphStep&) = delete;
  GraphStep& operator=(const GraphStep&) = delete;

  /// Throws value_error unless `opt` has a replayable update.
  static std::size_t check(const optim::Optimizer<T, B>& opt) {
    const std::size_t k = opt.replay_scalars();
    if (k == 0)
      throw value_error("Trainer: graph mode needs an optimizer with a replayable update; " +
                        opt.describe() + " has none");
    return k;
  }

  /// Whether a buffer the captured work reads by address was replaced since the capture: the
  /// batch's (a new shape), or a parameter's (`p.value = other` instead of an in-place write).
  /// The caller settles the old graph's replays, then reset()s.
  bool moved(const Batch<T, B>& batch, const std::vector<Parameter<T, B>*>& params) const {
    if (!graph_.captured()) return false;
    if (captured_.size() != 2 + 2 * params.size()) return true;
    if (captured_[0] != batch.inputs.data() || captured_[1] != batch.targets.data()) return true;
    // A smaller batch may keep the buffer (a shrinking resize does not move it): the captured
    // work would still run over the old shape.
    if (captured_shapes_.size() != 2 || !(captured_shapes_[0] == batch.inputs.shape()) ||
        !(captured_shapes_[1] == batch.targets.shape()))
      return true;
    for (std::size_t i = 0; i < params.size(); ++i)
      if (captured_[2 + 2 * i] != params[i]->value.data() ||
          captured_[3 + 2 * i] != params[i]->grad.data())
        return true;
    return false;
  }
  /// Drops the captured graph: the next step runs eagerly, the one after captures again.
  void reset() {
    graph_.reset();
    warm_ = false;
  }

  /// One step over `batch` (already drawn, the learning rate already set): counts one
  /// optimizer step (next_scalars), uploads its scalars and runs or replays the work. If the
  /// work throws, the counted step is taken back.
  void step(const Batch<T, B>& batch, const std::vector<Parameter<T, B>*>& params,
            optim::Optimizer<T, B>& opt, bool check_finite) {
    const std::size_t k = check(opt);
    check_finite_ = check_finite;
    if (!ready_) init_counts();
    host_scalars_.resize(2 * k);
    opt.next_scalars(host_scalars_.data(), host_scalars_.data() + k);
    scalars_.resize(Shape{static_cast<index_t>(2 * k)});
    B::from_host(scalars_.data(), host_scalars_.data(), scalars_.size());
    try {
      run_or_replay(batch, params, opt, static_cast<index_t>(k));
    } catch (...) {
      opt.take_back(1);  // next_scalars() counted a step that did not happen
      throw;
    }
    ++replayed_;
  }

  /// Whether the host should read the device's verdict now: every `every` steps, and at
  /// least every rebase_after steps (the device counts in T).
  bool due(long long every) const { return replayed_ % every == 0 || replayed_ >= rebase_after; }

  /// Reads the device's count of applied steps (one value back) and returns how many of the
  /// steps replayed since the last settle() were skipped for NaN/Inf (the first bad one and
  /// every one queued after it); those are taken back from `opt`, and the next step updates
  /// again. 0 when none were, or when nothing ran since the last invalidate().
  long long settle(optim::Optimizer<T, B>& opt) {
    if (!ready_ || !check_finite_) return 0;
    const auto applied = static_cast<long long>(applied_.item());
    if (applied == replayed_) {
      if (replayed_ >= rebase_after) {  // settled: count afresh, far below float's exact 2^24
        applied_.fill(T(0));
        replayed_ = 0;
      }
      return 0;
    }
    const long long skipped = replayed_ - applied;
    opt.take_back(skipped);
    replayed_ = applied;
    ok_.fill(T(1));  // the next step updates again (the caller chose to go on)
    return skipped;
  }
  /// Forgets the device's counts (after the caller changed the iteration or loaded a
  /// checkpoint): the next step starts them afresh.
  void invalidate() { ready_ = false; }

  /// Device operations in the captured step (0 before the first capture and on the CPU).
  std::size_t nodes() const { return graph_.nodes(); }
  /// How many times the step was captured.
  int captures() const { return captures_; }

 private:
  void run_or_replay(const Batch<T, B>& batch, const std::vector<Parameter<T, B>*>& params,
                     optim::Optimizer<T, B>& opt, index_t rows) {
    if (!warm_) {
      work(opt, rows);
      warm_ = true;
      return;
    }
    if (!graph_.captured()) {
      graph_.capture([this, &opt, rows] { work(opt, rows); });
      captured_.clear();
      captured_.push_back(batch.inputs.data());
      captured_.push_back(batch.targets.data());
      captured_shapes_ = {batch.inputs.shape(), batch.targets.shape()};
      for (auto* p : params) {
        captured_.push_back(p->value.data());
        captured_.push_back(p->grad.data());
      }
      ++captures_;
    }
    graph_.replay();
  }

  void init_counts() {
    if (ok_.size() == 0) {
      ok_ = Tensor<T, B>(Shape{1});
      applied_ = Tensor<T, B>(Shape{1});
    }
    ok_.fill(T(1));
    applied_.fill(T(0));
    replayed_ = 0;
    ready_ = true;
  }

  // What the graph holds: forward, loss, backward, finite check and update, reading the batch
  // and the scalar rows from their fixed buffers.
  void work(optim::Optimizer<T, B>& opt, index_t rows) {
    (void)forward_backward_();
    const View<T, B> apply(scalars_.data(), Shape{rows});
    if (!check_finite_) return opt.step_from(apply);
    const View<T, B> skip(scalars_.data() + rows, Shape{rows});
    const View<T, B> probe = probe_();
    ok_ = finite(probe) * ok_;
    applied_ += ok_;
    coefficients_.resize(Shape{rows});
    const auto ok = broadcast_scalar(ok_.view(), Shape{rows});
    coefficients_ = apply * ok + skip * (T(1) - ok);  // exact: ok is 0 or 1
    opt.step_from(coefficients_.view());
  }

  Work forward_backward_, probe_;
  typename B::StepGraph graph_;
  std::vector<const T*> captured_;      // what the capture read by address (moved())
  std::vector<Shape> captured_shapes_;  // the batch's shapes at the capture
  std::vector<T> host_scalars_;
  Tensor<T, B> scalars_;       // [apply row, skip row], uploaded before each replay
  Tensor<T, B> coefficients_;  // the row the device picked
  Tensor<T, B> ok_;            // 1 until a replayed step saw NaN/Inf, then 0 (sticky)
  Tensor<T, B> applied_;       // replayed steps that updated the model
  long long replayed_ = 0;     // steps since applied_ was last zeroed
  static constexpr long long rebase_after = 1LL << 20;  // applied_ is zeroed past this many
  int captures_ = 0;
  bool warm_ = false, ready_ = false, check_finite_ = true;
};

}  // namespace siam

// The run-time interface every optimizer implements, so a trainer can hold any of them
// (`std::unique_ptr<optim::Optimizer<T, B>>`), and the one batching helper they share.
//
// Contract:
//   step()          one update of every parameter from its current gradient; increments
//                   steps() first, so the first update is step 1 (Adam's bias correction)
//   zero_grad()     marks every gradient zero (O(1) per parameter; see Parameter)
//   lr(), set_lr()  the learning rate used by the next step(); set_lr accepts any finite
//                   lr >= 0 (a schedule may reach 0), throws value_error otherwise
//   steps(), set_steps()         the step count (restored from a checkpoint)
//   take_back(n)    un-counts the last n counted steps whose update was not applied
//   state_tensors() the tensors a checkpoint must store, in a fixed order (see each class)
//   describe()      the settings, e.g. "SGD(lr=0.1, momentum=0.9, ...)"
//   replay_scalars(), next_scalars(), step_from()
//                   optional: an update that reads its step-dependent scalars (learning
//                   rate, bias corrections) from memory on B, so a captured graph can replay
//                   it (Trainer's graph mode); replay_scalars() is 0 where unsupported
// A checkpoint that stores the parameters, state_tensors(), steps() and lr() (or the
// schedule that sets it) resumes bit-identically.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "siam/autodiff/tape.hpp"
#include "siam/detail/format.hpp"
#include "siam/error.hpp"

namespace siam::optim {

template <class T, class B>
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  virtual void step() = 0;
  virtual void zero_grad() = 0;
  virtual double lr() const = 0;
  virtual void set_lr(double lr) = 0;
  virtual long long steps() const = 0;
  virtual void set_steps(long long t) = 0;
  virtual std::vector<Tensor<T, B>*> state_tensors() = 0;
  virtual std::string describe() const = 0;
  virtual const std::vector<Parameter<T, B>*>& parameters() const = 0;

  /// Un-counts the last `n` counted steps whose update never reached the parameters (a
  /// replayed update that skipped itself, or a next_scalars() whose replay failed): steps()
  /// goes back by n, so the next update uses the step count it would have had. Throws
  /// value_error for n < 0 or n > steps(), leaving the count as it was.
  void take_back(long long n) {
    if (n < 0 || n > steps())
      throw value_error(describe() + ": cannot take back " + std::to_string(n) + " of " +
                        std::to_string(steps()) + " counted steps");
    set_steps(steps() - n);
  }

  /// How many scalars step_from() reads; 0 (the default) when this optimizer has no
  /// replayable update.
  virtual std::size_t replay_scalars() const { return 0; }
  /// Advances steps() as step() does and writes that step's scalars twice: `apply`, for the
  /// update, and `skip`, for one that leaves every parameter and state value as it is (each
  /// replay_scalars() long). The same update reads one row or the other on the device.
  virtual void next_scalars(T* apply, T* skip) {
    (void)apply;
    (void)skip;
    throw value_error(describe() + " has no replayable update (replay_scalars() is 0)");
  }
  /// One update with its scalars read from `scalars` (replay_scalars() values on B, written
  /// as next_scalars() does). Leaves steps() alone.
  virtual void step_from(View<T, B> scalars) {
    (void)scalars;
    throw value_error(describe() + " has no replayable update (replay_scalars() is 0)");
  }

 protected:
  Optimizer() = default;
  Optimizer(const Optimizer&) = default;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(const Optimizer&) = default;
  Optimizer& operator=(Optimizer&&) = default;
};

namespace detail {

/// Throws value_error naming `who` unless lr is finite and >= 0 (> 0 when `positive`).
inline void check_lr(const char* who, double lr, bool positive) {
  if (!std::isfinite(lr) || lr < 0 || (positive && lr == 0))
    throw value_error(std::string(who) + ": learning rate must be " + (positive ? "> 0" : ">= 0") +
                      " and finite, got " + siam::detail::fmt(lr));
}

inline void check_steps(const char* who, long long t) {
  if (t < 0)
    throw value_error(std::string(who) + ": step count must be >= 0, got " + std::to_string(t));
}

/// Throws value_error if a parameter pointer is null (names its index).
template <class T, class B>
void check_params(const char* who, const std::vector<Parameter<T, B>*>& params) {
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!params[i])
      throw value_error(std::string(who) + ": parameter " + std::to_string(i) + " is null");
}

/// Runs make(i) for i in [0, n) as fused groups, 8 to a batch: every group has the same
/// expression type, so each batch is one pass per group on the CPU and ONE kernel launch
/// on a GPU. The groups live on the stack: nothing is allocated.
template <class T, class B, class Make>
void fused_over(std::size_t n, const Make& make) {
  using Group = decltype(make(std::size_t{0}));
  std::array<Group, 8> groups;
  std::size_t k = 0;
  for (std::size_t i = 0; i < n; ++i) {
    groups[k++] = make(i);
    if (k == groups.size() || i + 1 == n) {
      fused_batch<T, B>(groups.data(), k);
      k = 0;
    }
  }
}

}  // namespace detail
}  // namespace siam::optim

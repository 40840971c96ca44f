// Dropout: in training mode each value is zeroed with probability p and the rest scaled by
// 1 / (1 - p); in inference mode the identity. The mask of each step comes from a hash of
// (seed, step, element) (autodiff/dropout.hpp), so it does not depend on the thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "siam/autodiff/dropout.hpp"
#include "siam/nn/layers.hpp"

namespace siam::nn {

/// Throws value_error for p outside [0, 1). The seed is drawn from `rng` (the run's random
/// stream); each training forward pass is one step. Not exported (ONNX graphs are for
/// inference, where dropout is the identity).
template <class T, class B>
class Dropout final : public ParameterFree<T, B> {
 public:
  static constexpr const char* kind = "Dropout";
  static std::unique_ptr<Layer<T, B>> from_spec(const LayerSpec& s, Rng& rng) {
    return std::make_unique<Dropout>(s.get("p"), rng);
  }

  Dropout(double p, Rng& rng) : p_(p), seed_(rng.next_u64()) {
    if (!(p >= 0 && p < 1))
      throw value_error("Dropout: p must be in [0, 1), got " + std::to_string(p));
  }
  Var<T, B> forward(Var<T, B> x) override {
    if (!training_ || p_ == 0) return x;
    return dropout(x, p_, seed_, step_++);
  }
  Shape output_shape(const Shape& in) const override { return in; }
  void set_training(bool on) override { training_ = on; }
  std::string describe() const override { return "Dropout(" + std::to_string(p_) + ")"; }
  LayerSpec spec() const override { return LayerSpec{kind, {}}.set("p", p_); }
  std::string emit(GraphEmitter&, const std::string& x, const Shape&) const override { return x; }
  double p() const { return p_; }
  /// The step counter (the next training forward pass uses this step's mask).
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t s) { step_ = s; }
  std::vector<std::uint64_t*> streams() override { return {&seed_, &step_}; }

 private:
  double p_;
  std::uint64_t seed_, step_ = 0;
  bool training_ = true;
};

}  // namespace siam::nn

// AdamW: Adam with decoupled weight decay (Loshchilov and Hutter, 2019, "Decoupled Weight
// Decay Regularization"), in PyTorch's form (torch.optim.AdamW). Per parameter, at step t:
//   p = p (1 - lr wd)                       the decay: not part of the gradient, so the
//                                           moments never see it
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// The decay is scaled by the current learning rate (PyTorch's convention): the paper's
// per-step decay eta_t lambda is lr wd here, so a schedule on lr scales the decay with
// the step, as the paper's multiplier eta_t does.
// The Adam part is written exactly as in adam.hpp, so weight_decay = 0 gives Adam's
// results bit for bit. One fused pass per parameter, all in one batch; no allocation.
// State for a checkpoint: state_tensors() = [m_0 .. m_{n-1}, v_0 .. v_{n-1}], steps().
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "siam/optim/adam.hpp"
#include "siam/optim/optimizer.hpp"

namespace siam::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // PyTorch's default
};

template <class T, class B>
class AdamW final : public Optimizer<T, B> {
 public:
  /// Throws value_error unless lr > 0, betas in [0, 1), eps > 0, weight_decay >= 0
  /// (all finite).
  AdamW(std::vector<Parameter<T, B>*> params, AdamWOptions opt = {})
      : params_(std::move(params)), opt_(opt) {
    using siam::detail::fmt;
    detail::check_lr("AdamW", opt.lr, true);
    if (!(opt.beta1 >= 0 && opt.beta1 < 1) || !(opt.beta2 >= 0 && opt.beta2 < 1))
      throw value_error("AdamW: betas must be in [0, 1), got " + fmt(opt.beta1) + ", " +
                        fmt(opt.beta2));
    if (!(opt.eps > 0) || !std::isfinite(opt.eps))
      throw value_error("AdamW: eps must be > 0 and finite, got " + fmt(opt.eps));
    if (!(opt.weight_decay >= 0) || !std::isfinite(opt.weight_decay))
      throw value_error("AdamW: weight_decay must be >= 0 and finite, got " +
                        fmt(opt.weight_decay));
    detail::check_params("AdamW", params_);
    for (auto* p : params_) {
      m_.emplace_back(p->value.shape());
      v_.emplace_back(p->value.shape());
    }
  }

  void zero_grad() override {
    for (auto* p : params_)
      p->zero_grad();
  }

  void step() override {
    ++t_;
    const Coefficients k = coefficients();
    detail::fused_over<T, B>(params_.size(),
                             [&](std::size_t i) { return update(*params_[i], m_[i], v_[i], k); });
  }

  /// Replayable update (Adam's, detail::adam_step_from): the scalars are Adam's eight and
  /// 1 - lr wd; the skip row is 1, 0, 1, 0, 0, 1, 1, 1, 1.
  std::size_t replay_scalars() const override { return 9; }
  void next_scalars(T* apply, T* skip) override {
    ++t_;
    const Coefficients k = coefficients();
    const T a[9] = {k.b1, T(1) - k.b1, k.b2, T(1) - k.b2, k.lr, k.ic1, k.ic2, k.eps, k.decay};
    const T s[9] = {1, 0, 1, 0, 0, 1, 1, 1, 1};
    std::copy(a, a + 9, apply);
    std::copy(s, s + 9, skip);
  }
  void step_from(View<T, B> scalars) override {
    detail::adam_step_from<true>("AdamW", params_, m_, v_, scalars);
  }

  double lr() const override { return opt_.lr; }
  void set_lr(double lr) override {
    detail::check_lr("AdamW::set_lr", lr, false);
    opt_.lr = lr;
  }
  long long steps() const override { return t_; }
  void set_steps(long long t) override {
    detail::check_steps("AdamW::set_steps", t);
    t_ = t;
  }
  std::vector<Tensor<T, B>*> state_tensors() override {
    std::vector<Tensor<T, B>*> s;
    for (auto& m : m_)
      s.push_back(&m);
    for (auto& v : v_)
      s.push_back(&v);
    return s;
  }
  std::string describe() const override {
    using siam::detail::fmt;
    return "AdamW(lr=" + fmt(opt_.lr) + ", betas=(" + fmt(opt_.beta1) + ", " + fmt(opt_.beta2) +
           "), eps=" + fmt(opt_.eps) + ", weight_decay=" + fmt(opt_.weight_decay) + ")";
  }
  const std::vector<Parameter<T, B>*>& parameters() const override { return params_; }

  std::vector<Tensor<T, B>>& first_moments() { return m_; }
  std::vector<Tensor<T, B>>& second_moments() { return v_; }
  const AdamWOptions& options() const { return opt_; }

 private:
  struct Coefficients {
    T b1, b2, lr, eps, ic1, ic2;  // ic = 1 / bias correction
    T decay;                      // 1 - lr wd
  };
  Coefficients coefficients() const {
    const double c1 = 1 - std::pow(opt_.beta1, static_cast<double>(t_));
    const double c2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));
    return {T(opt_.beta1),
            T(opt_.beta2),
            T(opt_.lr),
            T(opt_.eps),
            T(1 / c1),
            T(1 / c2),
            T(1 - opt_.lr * opt_.weight_decay)};
  }
  // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
  // p = p decay - lr (m ic1) / (sqrt(v ic2) + eps)   (p on the right is the old value)
  static auto update(Parameter<T, B>& p, Tensor<T, B>& m_t, Tensor<T, B>& v_t,
                     const Coefficients& k) {
    const Tensor<T, B>& g = p.gradient();
    View<T, B> m = m_t.view(), v = v_t.view(), w = p.value.view();
    return fused_group(assign_to(m, k.b1 * m + (T(1) - k.b1) * g),
                       assign_to(v, k.b2 * v + (T(1) - k.b2) * square(g)),
                       assign_to(w, w * k.decay - k.lr * (m * k.ic1) / (sqrt(v * k.ic2) + k.eps)));
  }

  std::vector<Parameter<T, B>*> params_;
  AdamWOptions opt_;
  std::vector<Tensor<T, B>> m_, v_;
  long long t_ = 0;
};

}  // namespace siam::optim

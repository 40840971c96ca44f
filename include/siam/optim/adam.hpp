// Adam (Kingma and Ba, 2015, Algorithm 1). Per parameter, at step t:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// All three updates run as one fused pass over each parameter (no temporaries), and
// every parameter's pass in one batch (one kernel launch on a GPU). The learning rate
// may be changed between steps (set_lr, a schedule).
// State for a checkpoint: state_tensors() = [m_0 .. m_{n-1}, v_0 .. v_{n-1}], steps().
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "siam/optim/optimizer.hpp"

namespace siam::optim {

namespace detail {
/// The Adam family's update (Adam; AdamW when Decay) with every constant read from `scalars`
/// on B, for a captured graph to replay: b1, 1 - b1, b2, 1 - b2, lr, 1 / c1, 1 / c2, eps, and
/// AdamW's 1 - lr wd. The expressions are step()'s; mul_or_zero turns the gradient terms and
/// the weight change off exactly when a skip row (0 for 1 - b, lr; 1 elsewhere) is read (a
/// NaN gradient times 0 would still be NaN).
template <bool Decay, class T, class B>
void adam_step_from(const char* who, const std::vector<Parameter<T, B>*>& params,
                    std::vector<Tensor<T, B>>& m_all, std::vector<Tensor<T, B>>& v_all,
                    const View<T, B>& scalars) {
  const index_t want = Decay ? 9 : 8;
  if (scalars.size() != want)
    throw shape_error(std::string(who) + "::step_from: expected " + std::to_string(want) +
                      " scalars, got " + scalars.shape().str());
  fused_over<T, B>(params.size(), [&](std::size_t i) {
    Parameter<T, B>& p = *params[i];
    const Tensor<T, B>& g = p.gradient();
    View<T, B> m = m_all[i].view(), v = v_all[i].view(), w = p.value.view();
    const auto s = [&](index_t j) {
      return broadcast_scalar(View<T, B>(scalars.data() + j, Shape{1}), m.shape());
    };
    const auto change = mul_or_zero(s(4), m * s(5)) / (sqrt(v * s(6)) + s(7));
    if constexpr (Decay)
      return fused_group(assign_to(m, s(0) * m + mul_or_zero(s(1), g)),
                         assign_to(v, s(2) * v + mul_or_zero(s(3), square(g))),
                         assign_to(w, w * s(8) - change));
    else
      return fused_group(assign_to(m, s(0) * m + mul_or_zero(s(1), g)),
                         assign_to(v, s(2) * v + mul_or_zero(s(3), square(g))),
                         assign_to(w, w - change));
  });
}
}  // namespace detail

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

template <class T, class B>
class Adam final : public Optimizer<T, B> {
 public:
  Adam(std::vector<Parameter<T, B>*> params, AdamOptions opt = {})
      : params_(std::move(params)), opt_(opt) {
    detail::check_lr("Adam", opt.lr, true);
    if (!(opt.beta1 >= 0 && opt.beta1 < 1) || !(opt.beta2 >= 0 && opt.beta2 < 1))
      throw value_error("Adam: betas must be in [0, 1), got " + siam::detail::fmt(opt.beta1) +
                        ", " + siam::detail::fmt(opt.beta2));
    if (!(opt.eps > 0) || !std::isfinite(opt.eps))
      throw value_error("Adam: eps must be > 0 and finite, got " + siam::detail::fmt(opt.eps));
    detail::check_params("Adam", params_);
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

  /// Replayable update: the scalars are b1, 1 - b1, b2, 1 - b2, lr, 1 / c1, 1 / c2, eps
  /// (c = bias correction); the skip row is 1, 0, 1, 0, 0, 1, 1, 1.
  std::size_t replay_scalars() const override { return 8; }
  void next_scalars(T* apply, T* skip) override {
    ++t_;
    const Coefficients k = coefficients();
    const T a[8] = {k.b1, T(1) - k.b1, k.b2, T(1) - k.b2, k.lr, k.ic1, k.ic2, k.eps};
    const T s[8] = {1, 0, 1, 0, 0, 1, 1, 1};
    std::copy(a, a + 8, apply);
    std::copy(s, s + 8, skip);
  }
  // The same update as step(), each constant read from `scalars` instead (adam_step_from).
  void step_from(View<T, B> scalars) override {
    detail::adam_step_from<false>("Adam", params_, m_, v_, scalars);
  }

  double lr() const override { return opt_.lr; }
  void set_lr(double lr) override {
    detail::check_lr("Adam::set_lr", lr, false);
    opt_.lr = lr;
  }
  long long steps() const override { return t_; }
  void set_steps(long long t) override {
    detail::check_steps("Adam::set_steps", t);
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
    return "Adam(lr=" + fmt(opt_.lr) + ", betas=(" + fmt(opt_.beta1) + ", " + fmt(opt_.beta2) +
           "), eps=" + fmt(opt_.eps) + ")";
  }
  const std::vector<Parameter<T, B>*>& parameters() const override { return params_; }

  std::vector<Tensor<T, B>>& first_moments() { return m_; }
  std::vector<Tensor<T, B>>& second_moments() { return v_; }
  const AdamOptions& options() const { return opt_; }

 private:
  struct Coefficients {
    T b1, b2, lr, eps, ic1, ic2;  // ic = 1 / bias correction
  };
  Coefficients coefficients() const {
    const double c1 = 1 - std::pow(opt_.beta1, static_cast<double>(t_));
    const double c2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));
    return {T(opt_.beta1), T(opt_.beta2), T(opt_.lr), T(opt_.eps), T(1 / c1), T(1 / c2)};
  }
  // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr (m ic1) / (sqrt(v ic2) + eps)
  static auto update(Parameter<T, B>& p, Tensor<T, B>& m_t, Tensor<T, B>& v_t,
                     const Coefficients& k) {
    const Tensor<T, B>& g = p.gradient();
    View<T, B> m = m_t.view(), v = v_t.view(), w = p.value.view();
    return fused_group(assign_to(m, k.b1 * m + (T(1) - k.b1) * g),
                       assign_to(v, k.b2 * v + (T(1) - k.b2) * square(g)),
                       assign_to(w, w - k.lr * (m * k.ic1) / (sqrt(v * k.ic2) + k.eps)));
  }

  std::vector<Parameter<T, B>*> params_;
  AdamOptions opt_;
  std::vector<Tensor<T, B>> m_, v_;
  long long t_ = 0;
};

}  // namespace siam::optim

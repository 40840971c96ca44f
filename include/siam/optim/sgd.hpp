// Stochastic gradient descent with momentum, Nesterov momentum and (coupled, L2) weight
// decay, with PyTorch's conventions (torch.optim.SGD). Per parameter p with gradient g,
// momentum mu, dampening d, weight decay wd:
//   g' = g + wd p
//   momentum == 0:  p -= lr g'
//   otherwise:      buf = g'                         at the first step
//                   buf = mu buf + (1 - d) g'        later
//                   p -= lr (g' + mu buf)            Nesterov
//                   p -= lr buf                      classical
// (Sutskever et al. 2013's Nesterov form as PyTorch writes it: the dampening does not
// apply to the first step, and the learning rate multiplies the buffer, so changing it
// mid-run does not rescale the accumulated velocity.)
// Each step is one fused pass per parameter (buffer and parameter together), all
// parameters in one batch (one kernel launch on a GPU); nothing is allocated.
// State for a checkpoint: state_tensors() = [buf_0 .. buf_{n-1}] (empty without
// momentum), steps() (the first-step rule depends on it).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "siam/optim/optimizer.hpp"

namespace siam::optim {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

template <class T, class B>
class SGD final : public Optimizer<T, B> {
 public:
  /// Throws value_error unless lr > 0, momentum in [0, 1), dampening in [0, 1],
  /// weight_decay >= 0 (all finite), and Nesterov has momentum > 0 and dampening 0.
  SGD(std::vector<Parameter<T, B>*> params, SGDOptions opt = {})
      : params_(std::move(params)), opt_(opt) {
    using siam::detail::fmt;
    detail::check_lr("SGD", opt.lr, true);
    if (!(opt.momentum >= 0 && opt.momentum < 1))
      throw value_error("SGD: momentum must be in [0, 1), got " + fmt(opt.momentum));
    if (!(opt.dampening >= 0 && opt.dampening <= 1))
      throw value_error("SGD: dampening must be in [0, 1], got " + fmt(opt.dampening));
    if (!(opt.weight_decay >= 0) || !std::isfinite(opt.weight_decay))
      throw value_error("SGD: weight_decay must be >= 0 and finite, got " + fmt(opt.weight_decay));
    if (opt.nesterov && (opt.momentum == 0 || opt.dampening != 0))
      throw value_error("SGD: Nesterov momentum needs momentum > 0 and dampening 0, got momentum " +
                        fmt(opt.momentum) + ", dampening " + fmt(opt.dampening));
    detail::check_params("SGD", params_);
    if (opt.momentum != 0)
      for (auto* p : params_)
        buf_.emplace_back(p->value.shape());
  }

  void zero_grad() override {
    for (auto* p : params_)
      p->zero_grad();
  }

  void step() override {
    const bool first = t_ == 0;
    ++t_;
    const T lr = T(opt_.lr), wd = T(opt_.weight_decay), mu = T(opt_.momentum),
            keep = T(1 - opt_.dampening);
    const std::size_t n = params_.size();
    // One expression type per case, so each case is still one batch.
    if (opt_.momentum == 0) {
      detail::fused_over<T, B>(n, [&](std::size_t i) {
        Parameter<T, B>& p = *params_[i];
        const Tensor<T, B>& g = p.gradient();
        View<T, B> w = p.value.view();
        return fused_group(assign_to(w, w - lr * (g + wd * w)));
      });
      return;
    }
    // buf first, then p reads the new buf at the same index (fused() stores in order).
    auto run = [&](auto buffer_update, auto param_update) {
      detail::fused_over<T, B>(n, [&](std::size_t i) {
        Parameter<T, B>& p = *params_[i];
        const Tensor<T, B>& g = p.gradient();
        View<T, B> w = p.value.view(), b = buf_[i].view();
        return fused_group(assign_to(b, buffer_update(b, g, w)),
                           assign_to(w, param_update(w, b, g)));
      });
    };
    auto fresh = [&](auto&, auto& g, auto& w) { return g + wd * w; };
    auto decayed = [&](auto& b, auto& g, auto& w) { return mu * b + keep * (g + wd * w); };
    auto classical = [&](auto& w, auto& b, auto&) { return w - lr * b; };
    auto nesterov = [&](auto& w, auto& b, auto& g) { return w - lr * ((g + wd * w) + mu * b); };
    if (first && opt_.nesterov)
      run(fresh, nesterov);
    else if (first)
      run(fresh, classical);
    else if (opt_.nesterov)
      run(decayed, nesterov);
    else
      run(decayed, classical);
  }

  double lr() const override { return opt_.lr; }
  void set_lr(double lr) override {
    detail::check_lr("SGD::set_lr", lr, false);
    opt_.lr = lr;
  }
  long long steps() const override { return t_; }
  void set_steps(long long t) override {
    detail::check_steps("SGD::set_steps", t);
    t_ = t;
  }
  std::vector<Tensor<T, B>*> state_tensors() override {
    std::vector<Tensor<T, B>*> s;
    for (auto& b : buf_)
      s.push_back(&b);
    return s;
  }
  std::string describe() const override {
    using siam::detail::fmt;
    return "SGD(lr=" + fmt(opt_.lr) + ", momentum=" + fmt(opt_.momentum) +
           ", dampening=" + fmt(opt_.dampening) + ", weight_decay=" + fmt(opt_.weight_decay) +
           ", nesterov=" + (opt_.nesterov ? "true" : "false") + ")";
  }
  const std::vector<Parameter<T, B>*>& parameters() const override { return params_; }

  const SGDOptions& options() const { return opt_; }
  /// The momentum buffers (empty without momentum).
  std::vector<Tensor<T, B>>& momentum_buffers() { return buf_; }

 private:
  std::vector<Parameter<T, B>*> params_;
  SGDOptions opt_;
  std::vector<Tensor<T, B>> buf_;
  long long t_ = 0;
};

}  // namespace siam::optim

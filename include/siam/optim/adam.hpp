// Adam (Kingma and Ba, 2015, Algorithm 1). Per parameter, at step t:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// All three updates run as one fused pass over each parameter: no temporaries.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "siam/autodiff/tape.hpp"

namespace siam::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

template <class T, class B>
class Adam {
 public:
  Adam(std::vector<Parameter<T, B>*> params, AdamOptions opt = {})
      : params_(std::move(params)), opt_(opt) {
    if (!(opt.lr > 0))
      throw value_error("Adam: learning rate must be > 0, got " + std::to_string(opt.lr));
    if (!(opt.beta1 >= 0 && opt.beta1 < 1) || !(opt.beta2 >= 0 && opt.beta2 < 1))
      throw value_error("Adam: betas must be in [0, 1), got " + std::to_string(opt.beta1) + ", " +
                        std::to_string(opt.beta2));
    if (!(opt.eps > 0)) throw value_error("Adam: eps must be > 0");
    for (auto* p : params_) {
      m_.emplace_back(p->value.shape());
      v_.emplace_back(p->value.shape());
    }
  }

  void zero_grad() {
    for (auto* p : params_)
      p->zero_grad();
  }

  void step() {
    ++t_;
    const double c1 = 1 - std::pow(opt_.beta1, static_cast<double>(t_));
    const double c2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));
    const T b1 = T(opt_.beta1), b2 = T(opt_.beta2), lr = T(opt_.lr), eps = T(opt_.eps);
    const T ic1 = T(1 / c1), ic2 = T(1 / c2);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = *params_[i];
      const Tensor<T, B>& g = p.gradient();
      View<T, B> m = m_[i].view(), v = v_[i].view(), w = p.value.view();
      fused(assign_to(m, b1 * m + (T(1) - b1) * g),  //
            assign_to(v, b2 * v + (T(1) - b2) * square(g)),
            assign_to(w, w - lr * (m * ic1) / (sqrt(v * ic2) + eps)));
    }
  }

  long long steps() const { return t_; }
  void set_steps(long long t) { t_ = t; }
  std::vector<Tensor<T, B>>& first_moments() { return m_; }
  std::vector<Tensor<T, B>>& second_moments() { return v_; }
  const AdamOptions& options() const { return opt_; }

 private:
  std::vector<Parameter<T, B>*> params_;
  AdamOptions opt_;
  std::vector<Tensor<T, B>> m_, v_;
  long long t_ = 0;
};

}  // namespace siam::optim

// Adam (Kingma and Ba, 2015, Algorithm 1). Per parameter, at step t:
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// All three updates run as one fused pass over each parameter: no temporaries.
#pragma once

#include <array>
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
    const Coefficients k{T(opt_.beta1), T(opt_.beta2), T(opt_.lr),
                         T(opt_.eps),   T(1 / c1),     T(1 / c2)};
    // Every parameter's update has the same expression type, so they run as one batch
    // (one kernel launch on a GPU); groups are built in a fixed-size buffer: no allocation.
    using Group = decltype(update(std::declval<Parameter<T, B>&>(), std::declval<Tensor<T, B>&>(),
                                  std::declval<Tensor<T, B>&>(), k));
    std::array<Group, 8> groups;
    std::size_t n = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      groups[n++] = update(*params_[i], m_[i], v_[i], k);
      if (n == groups.size() || i + 1 == params_.size()) {
        fused_batch<T, B>(groups.data(), n);
        n = 0;
      }
    }
  }

  long long steps() const { return t_; }
  void set_steps(long long t) { t_ = t; }
  std::vector<Tensor<T, B>>& first_moments() { return m_; }
  std::vector<Tensor<T, B>>& second_moments() { return v_; }
  const AdamOptions& options() const { return opt_; }

 private:
  struct Coefficients {
    T b1, b2, lr, eps, ic1, ic2;  // ic = 1 / bias correction
  };
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

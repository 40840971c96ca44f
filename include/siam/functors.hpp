// The scalar functions an expression node applies. Each is a tiny stateless (or
// one-scalar) functor usable on host and device; nodes store them, kernels call them.
#pragma once

#include "siam/detail/config.hpp"

namespace siam::fn {

struct add {
  static constexpr const char* name = "add";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a + b;
  }
};
struct sub {
  static constexpr const char* name = "sub";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a - b;
  }
};
struct mul {
  static constexpr const char* name = "mul";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a * b;
  }
};
struct div {
  static constexpr const char* name = "div";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a / b;
  }
};
/// a * b, but exactly 0 when a is 0, whatever b holds (NaN and Inf included): a coefficient
/// that can switch a term off, as a skipped optimizer step needs.
struct mul_or_zero {
  static constexpr const char* name = "mul_or_zero";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a == T(0) ? T(0) : a * b;
  }
};
// NaN propagates through the selects below as it does in PyTorch: a comparison with NaN is
// false, so each select is written so that a false comparison keeps the NaN operand (one
// select still; for numbers the results are those of the plain comparison, bit for bit).

/// The larger of a and b; NaN when either is NaN.
struct max {
  static constexpr const char* name = "max";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return (a > b || a != a) ? a : b;
  }
};
/// The smaller of a and b; NaN when either is NaN.
struct min {
  static constexpr const char* name = "min";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return (a < b || a != a) ? a : b;
  }
};
struct neg {
  static constexpr const char* name = "neg";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return -a;
  }
};
struct square {
  static constexpr const char* name = "square";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return a * a;
  }
};
struct sqrt {
  static constexpr const char* name = "sqrt";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::sqrt_(a);
  }
};
struct exp {
  static constexpr const char* name = "exp";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::exp_(a);
  }
};
struct log {
  static constexpr const char* name = "log";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::log_(a);
  }
};
/// max(a, 0), NaN for NaN (as PyTorch's ReLU): "a <= 0" is false for NaN, so a passes.
struct relu {
  static constexpr const char* name = "relu";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return a <= T(0) ? T(0) : a;
  }
};
/// ReLU's backward, (dy, x) -> dy where x > 0 or x is NaN, else 0 (x: ReLU's output; a NaN
/// unit passes dy on, as PyTorch's threshold backward does). A select rather than
/// dy * step(x): one instruction less per element, and like common frameworks it passes no
/// NaN from dy where the unit was off.
struct relu_grad {
  static constexpr const char* name = "relu_grad";
  template <class T>
  SIAM_HD T operator()(T dy, T x) const {
    return x <= T(0) ? T(0) : dy;
  }
};
/// relu's derivative mask: 1 where a > 0, else 0 (the subgradient at 0 is taken as 0).
struct step {
  static constexpr const char* name = "step";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return a > T(0) ? T(1) : T(0);
  }
};

/// 1 where a is finite, 0 for NaN and +-Inf (a - a is 0 exactly for finite a, NaN otherwise).
struct finite {
  static constexpr const char* name = "finite";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return a - a == T(0) ? T(1) : T(0);
  }
};

struct abs {
  static constexpr const char* name = "abs";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::abs_(a);
  }
};
struct tanh {
  static constexpr const char* name = "tanh";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::tanh_(a);
  }
};
/// 1 / (1 + e^-a), evaluated without overflow for large |a|.
struct sigmoid {
  static constexpr const char* name = "sigmoid";
  template <class T>
  SIAM_HD T operator()(T a) const {
    if (a >= T(0)) return T(1) / (T(1) + detail::exp_(-a));
    const T e = detail::exp_(a);
    return e / (T(1) + e);
  }
};
/// log(1 + e^a) = max(a, 0) + log1p(e^-|a|): no overflow, no loss of precision.
struct softplus {
  static constexpr const char* name = "softplus";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return (a > T(0) ? a : T(0)) + detail::log1p_(detail::exp_(-detail::abs_(a)));
  }
};
/// |a|'s backward, (dy, x) -> dy sign(x) (0 at x = 0, the subgradient taken).
struct abs_grad {
  static constexpr const char* name = "abs_grad";
  template <class T>
  SIAM_HD T operator()(T dy, T x) const {
    return x > T(0) ? dy : (x < T(0) ? -dy : T(0));
  }
};
/// 1 where a >= b or a is NaN, else 0 (maximum's routing mask: ties go to the first
/// operand, and the gradient follows the NaN that max passed on).
struct ge_mask {
  static constexpr const char* name = "ge_mask";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return (a >= b || a != a) ? T(1) : T(0);
  }
};
/// a^p for a fixed exponent p.
template <class S>
struct pow {
  static constexpr const char* name = "pow";
  S p;
  template <class T>
  SIAM_HD T operator()(T a) const {
    return detail::pow_(a, static_cast<T>(p));
  }
};
/// min(max(a, lo), hi); NaN for NaN (both comparisons are false).
template <class S>
struct clamp {
  static constexpr const char* name = "clamp";
  S lo, hi;
  template <class T>
  SIAM_HD T operator()(T a) const {
    const T l = static_cast<T>(lo), h = static_cast<T>(hi);
    return a < l ? l : (a > h ? h : a);
  }
};
/// clamp's backward, (dy, x) -> dy where lo <= x <= hi, else 0.
template <class S>
struct clamp_grad {
  static constexpr const char* name = "clamp_grad";
  S lo, hi;
  template <class T>
  SIAM_HD T operator()(T dy, T x) const {
    return (x >= static_cast<T>(lo) && x <= static_cast<T>(hi)) ? dy : T(0);
  }
};

}  // namespace siam::fn

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
struct max {
  static constexpr const char* name = "max";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};
struct min {
  static constexpr const char* name = "min";
  template <class T>
  SIAM_HD T operator()(T a, T b) const {
    return a < b ? a : b;
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
struct relu {
  static constexpr const char* name = "relu";
  template <class T>
  SIAM_HD T operator()(T a) const {
    return a > T(0) ? a : T(0);
  }
};
/// ReLU's backward, (dy, x) -> dy where x > 0, else 0: a select rather than dy * step(x)
/// (one instruction less per element, and like common frameworks it passes no NaN from
/// dy where the unit was off).
struct relu_grad {
  static constexpr const char* name = "relu_grad";
  template <class T>
  SIAM_HD T operator()(T dy, T x) const {
    return x > T(0) ? dy : T(0);
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

}  // namespace siam::fn

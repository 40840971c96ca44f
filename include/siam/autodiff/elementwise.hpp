// Elementwise ops on tape variables: arithmetic with a plain scalar on either side,
// division, negation, the usual activation and math functions, and maximum, minimum and
// clamp. Same conventions as ops.hpp: each op's forward and backward side by side, the
// gradient contract in one comment, expressions only (every backend runs them).
//
// Where a derivative is undefined (|x| at 0, the kink of max/min/clamp) the subgradient
// is fixed and documented; ties of maximum/minimum go to the first operand.
#pragma once

#include <limits>
#include <string>

#include "siam/autodiff/ops.hpp"

namespace siam {

namespace detail {
// forward(y, x) writes y from x's value; one recorded node whose backward is `bw`.
template <class T, class B, class F>
Var<T, B> unary_op(Var<T, B> x, const F& forward, typename Tape<T, B>::BackwardFn bw, T s0 = 0,
                   T s1 = 0) {
  auto& t = x.tape();
  Var<T, B> y = t.make(x.shape(), x.requires_grad());
  forward(y.value(), x.value());
  t.record(bw, y, {x.id()}, s0, s1);
  return y;
}
template <class T, class B>
using Node = typename Tape<T, B>::Node;
}  // namespace detail

// ---- affine with a scalar: y = a x + b (what x + s, s - x, x * s, x / s become).
// dx += a dy.
template <class T, class B>
Var<T, B> affine(Var<T, B> x, T a, T b) {
  return detail::unary_op(
      x, [&](View<T, B> out, const View<T, B>& v) { out = v * a + b; },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) * n.s[0]);
      },
      a, b);
}

template <class T, class B, ScalarValue S>
Var<T, B> operator+(Var<T, B> x, S s) {
  return affine(x, T(1), static_cast<T>(s));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator+(S s, Var<T, B> x) {
  return affine(x, T(1), static_cast<T>(s));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator-(Var<T, B> x, S s) {
  return affine(x, T(1), -static_cast<T>(s));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator-(S s, Var<T, B> x) {
  return affine(x, T(-1), static_cast<T>(s));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator*(Var<T, B> x, S s) {
  return affine(x, static_cast<T>(s), T(0));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator*(S s, Var<T, B> x) {
  return affine(x, static_cast<T>(s), T(0));
}
template <class T, class B, ScalarValue S>
Var<T, B> operator/(Var<T, B> x, S s) {
  return affine(x, T(1) / static_cast<T>(s), T(0));
}
template <class T, class B>
Var<T, B> operator-(Var<T, B> x) {
  return affine(x, T(-1), T(0));
}

// ---- reciprocal with a scale: y = s / x;  dx += -dy y / x.
template <class T, class B, ScalarValue S>
Var<T, B> operator/(S s, Var<T, B> x) {
  return detail::unary_op(
      x, [&](View<T, B> out, const View<T, B>& v) { out = static_cast<T>(s) / v; },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], -tp.out_grad(n) * tp.value(n.out) / tp.value(n.in[0]));
      });
}

// ---- div (same shapes): y = a / b;  da += dy / b;  db += -dy y / b.
template <class T, class B>
Var<T, B> operator/(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("div", a, b);
  auto& t = a.tape();
  auto e = a.value() / b.value();  // checks shapes
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) / tp.value(n.in[1]));
        tp.accumulate(n.in[1], -tp.out_grad(n) * tp.value(n.out) / tp.value(n.in[1]));
      },
      y, {a.id(), b.id()});
  return y;
}

// ---- exp: y = e^x;  dx += dy y.
template <class T, class B>
Var<T, B> exp(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = exp(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) * tp.value(n.out));
      });
}

// ---- log: y = ln x;  dx += dy / x  (x <= 0 gives NaN / -inf, as the math says).
template <class T, class B>
Var<T, B> log(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = log(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) / tp.value(n.in[0]));
      });
}

// ---- abs: y = |x|;  dx += dy sign(x)  (0 at x = 0).
template <class T, class B>
Var<T, B> abs(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = abs(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], abs_grad(tp.out_grad(n), tp.value(n.in[0])));
      });
}

// ---- tanh: y = tanh x;  dx += dy (1 - y^2).
template <class T, class B>
Var<T, B> tanh(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = tanh(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) * (T(1) - square(tp.value(n.out))));
      });
}

// ---- sigmoid: y = 1 / (1 + e^-x);  dx += dy y (1 - y).
template <class T, class B>
Var<T, B> sigmoid(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = sigmoid(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        const View<T, B> y = tp.value(n.out);
        tp.accumulate(n.in[0], tp.out_grad(n) * y * (T(1) - y));
      });
}

// ---- softplus: y = log(1 + e^x) (overflow-free);  dx += dy sigmoid(x).
template <class T, class B>
Var<T, B> softplus(Var<T, B> x) {
  return detail::unary_op(
      x, [](View<T, B> out, const View<T, B>& v) { out = softplus(v); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) * sigmoid(tp.value(n.in[0])));
      });
}

// ---- pow: y = x^p for a scalar p;  dx += dy p x^(p - 1).
template <class T, class B, ScalarValue S>
Var<T, B> pow(Var<T, B> x, S p) {
  return detail::unary_op(
      x, [&](View<T, B> out, const View<T, B>& v) { out = pow(v, static_cast<T>(p)); },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        const T q = n.s[0];
        tp.accumulate(n.in[0], tp.out_grad(n) * q * pow(tp.value(n.in[0]), q - T(1)));
      },
      static_cast<T>(p));
}

// ---- clamp: y = min(max(x, lo), hi);  dx += dy where lo <= x <= hi, else 0.
template <class T, class B, ScalarValue S>
Var<T, B> clamp(Var<T, B> x, S lo, S hi) {
  if (!(static_cast<T>(lo) <= static_cast<T>(hi)))
    throw value_error("clamp: lower bound " + std::to_string(lo) + " is above the upper bound " +
                      std::to_string(hi));
  return detail::unary_op(
      x,
      [&](View<T, B> out, const View<T, B>& v) {
        out = clamp(v, static_cast<T>(lo), static_cast<T>(hi));
      },
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        tp.accumulate(n.in[0], clamp_grad(tp.out_grad(n), tp.value(n.in[0]), n.s[0], n.s[1]));
      },
      static_cast<T>(lo), static_cast<T>(hi));
}

// ---- maximum / minimum with a scalar: y = max(x, s);  dx += dy where x >= s, else 0.
// (minimum: dx += dy where x <= s.)
template <class T, class B, ScalarValue S>
Var<T, B> maximum(Var<T, B> x, S s) {
  return clamp(x, static_cast<T>(s), std::numeric_limits<T>::infinity());
}
template <class T, class B, ScalarValue S>
Var<T, B> minimum(Var<T, B> x, S s) {
  return clamp(x, -std::numeric_limits<T>::infinity(), static_cast<T>(s));
}

// ---- maximum (same shapes): y = max(a, b);  da += dy [a >= b];  db += dy [a < b].
template <class T, class B>
Var<T, B> maximum(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("maximum", a, b);
  auto& t = a.tape();
  auto e = maximum(a.value(), b.value());
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        const auto m = ge_mask(tp.value(n.in[0]), tp.value(n.in[1]));
        tp.accumulate(n.in[0], tp.out_grad(n) * m);
        tp.accumulate(n.in[1], tp.out_grad(n) * (T(1) - m));
      },
      y, {a.id(), b.id()});
  return y;
}

// ---- minimum (same shapes): y = min(a, b);  da += dy [a <= b];  db += dy [a > b].
template <class T, class B>
Var<T, B> minimum(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("minimum", a, b);
  auto& t = a.tape();
  auto e = minimum(a.value(), b.value());
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const detail::Node<T, B>& n) {
        // a <= b or a is NaN (the operand min passed on): ge_mask of the negated operands
        const auto m = ge_mask(-tp.value(n.in[0]), -tp.value(n.in[1]));
        tp.accumulate(n.in[0], tp.out_grad(n) * m);
        tp.accumulate(n.in[1], tp.out_grad(n) * (T(1) - m));
      },
      y, {a.id(), b.id()});
  return y;
}

}  // namespace siam

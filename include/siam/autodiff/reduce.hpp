// Reductions of tape variables: sums and means over all elements, over the rows (one
// total per column) or over the columns (one total per row), and the row-wise
// log-sum-exp. Every tensor is seen as a rows x cols matrix (rows = first dimension,
// cols = the product of the others), as in shape.hpp.
#pragma once

#include <string>

#include "siam/autodiff/ops.hpp"

namespace siam {

namespace detail {
template <class T, class B>
Var<T, B> scaled_sum_all(Var<T, B> x, T scale) {
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{1}, x.requires_grad());
  if (scale == T(1))
    y.value() = sum_all(x.value());
  else
    y.value() = sum_all(x.value() * scale);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const Shape s = tp.shape(n.in[0]);
        tp.accumulate(n.in[0], broadcast_scalar(tp.out_grad(n), s) * n.s[0]);
      },
      y, {x.id()}, scale);
  return y;
}

// axis 0: y[c] = s sum_r x[r, c]  -> [C] ([1 x C] with keepdims);  dx[r, c] += s dy[c].
// axis 1: y[r] = s sum_c x[r, c]  -> [R] ([R x 1] with keepdims);  dx[r, c] += s dy[r].
template <class T, class B>
Var<T, B> scaled_sum_axis(const char* op, Var<T, B> x, int axis, bool keepdims, T scale) {
  const Shape s = x.shape();
  if (axis != 0 && axis != 1)
    throw value_error(std::string(op) + ": axis must be 0 (over rows) or 1 (over columns), got " +
                      std::to_string(axis));
  auto& t = x.tape();
  const Shape out = axis == 0 ? (keepdims ? Shape{1, s.cols()} : Shape{s.cols()})
                              : (keepdims ? Shape{s.rows(), 1} : Shape{s.rows()});
  Var<T, B> y = t.make(out, x.requires_grad());
  if (axis == 0) {
    View<T, B> yv(y.value().data(), Shape{s.cols()});
    if (scale == T(1))
      yv = sum_rows(x.value());
    else
      yv = sum_rows(x.value() * scale);
  } else {
    View<T, B> yv(y.value().data(), Shape{s.rows(), 1});
    if (scale == T(1))
      yv = sum_cols(x.value());
    else
      yv = sum_cols(x.value() * scale);
  }
  auto* node = t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const Shape xs = tp.shape(n.in[0]);
        const View<T, B> dy = tp.out_grad(n);
        if (n.i[0] == 0)
          tp.accumulate(
              n.in[0], broadcast_rows(View<T, B>(dy.data(), Shape{xs.cols()}), xs.rows()) * n.s[0]);
        else
          tp.accumulate(
              n.in[0],
              broadcast_cols(View<T, B>(dy.data(), Shape{xs.rows(), 1}), xs.cols()) * n.s[0]);
      },
      y, {x.id()}, scale);
  if (node) node->i[0] = axis;
  return y;
}
}  // namespace detail

// ---- sum of all elements -> [1];  dx += dy at every element.
template <class T, class B>
Var<T, B> sum(Var<T, B> x) {
  return detail::scaled_sum_all(x, T(1));
}

// ---- mean of all elements -> [1];  dx += dy / N. Throws shape_error if x is empty.
template <class T, class B>
Var<T, B> mean(Var<T, B> x) {
  const index_t n = x.shape().size();
  if (n == 0) throw shape_error("mean: empty tensor " + x.shape().str());
  return detail::scaled_sum_all(x, T(1) / static_cast<T>(n));
}

// ---- sum over one axis: axis 0 sums over the rows (one total per column), axis 1 over
// the columns (one total per row; a per-row squared norm is sum(square(x), 1, true)).
// keepdims keeps the reduced axis as 1 ([1 x C] or [R x 1]), else [C] or [R].
// dx += dy broadcast back over the reduced axis.
template <class T, class B>
Var<T, B> sum(Var<T, B> x, int axis, bool keepdims = false) {
  return detail::scaled_sum_axis("sum", x, axis, keepdims, T(1));
}

// ---- mean over one axis (as sum, divided by the reduced length; that length must be > 0).
template <class T, class B>
Var<T, B> mean(Var<T, B> x, int axis, bool keepdims = false) {
  const index_t n = axis == 0 ? x.shape().rows() : x.shape().cols();
  if (n == 0)
    throw shape_error("mean: axis " + std::to_string(axis) + " of " + x.shape().str() +
                      " is empty");
  return detail::scaled_sum_axis("mean", x, axis, keepdims, T(1) / static_cast<T>(n));
}

// ---- logsumexp over each row: y[r] = log sum_c e^x[r, c] -> [R x 1], computed as
// m + log sum_c e^(x - m) with m the row maximum (no overflow).
// dx[r, c] += dy[r] e^(x[r, c] - y[r])  (the row's softmax). An empty row gives -inf;
// a row must hold at least one finite value (mask with a large negative number, not -inf).
template <class T, class B>
Var<T, B> logsumexp_rows(Var<T, B> x) {
  const Shape s = x.shape();
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{s.rows(), 1}, x.requires_grad());
  Var<T, B> m = t.make(Shape{s.rows(), 1}, false);
  View<T, B> mv = m.value(), yv = y.value();
  const View<T, B> xv = x.value();
  mv = max_cols(xv);
  yv = sum_cols(exp(xv - broadcast_cols(mv, s.cols())));
  yv = mv + log(yv);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const View<T, B> xin = tp.value(n.in[0]);
        tp.accumulate(n.in[0], broadcast_cols(tp.out_grad(n), xin.cols()) *
                                   exp(xin - broadcast_cols(tp.value(n.out), xin.cols())));
      },
      y, {x.id()});
  return y;
}

}  // namespace siam

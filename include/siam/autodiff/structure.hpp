// Ops that move values around: explicit broadcasts (so arithmetic between a matrix and
// a row, a column or a scalar is spelled out), row gathers (pairs, triplets, mined
// indices), transpose and reshape. slice_rows and concat_rows live in ops.hpp.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "siam/autodiff/ops.hpp"

namespace siam {

// ---- broadcast_rows: y = 1 x (x a row [C] or [1 x C] repeated over `rows` rows -> [rows x C]).
// dx += sum over rows of dy.
template <class T, class B>
Var<T, B> broadcast_rows(Var<T, B> x, index_t rows) {
  const Shape s = x.shape();
  if (s.rows() != 1) throw shape_error("broadcast_rows: " + s.str() + " is not a row vector");
  if (rows < 0) throw shape_error("broadcast_rows: negative row count " + std::to_string(rows));
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{rows, s.cols()}, x.requires_grad());
  y.value() = broadcast_rows(x.value(), rows);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const Shape xs = tp.shape(n.in[0]);
        bool acc;
        View<T, B> g = tp.grad_for_write(n.in[0], acc);
        View<T, B> gr(g.data(), Shape{xs.cols()});
        if (acc)
          gr += sum_rows(tp.out_grad(n));
        else
          gr = sum_rows(tp.out_grad(n));
      },
      y, {x.id()});
  return y;
}

// ---- broadcast_cols: y = x 1^T (x a column [R x 1] or [R] repeated over `cols` columns
// -> [R x cols]).  dx += sum over columns of dy.
template <class T, class B>
Var<T, B> broadcast_cols(Var<T, B> x, index_t cols) {
  const Shape s = x.shape();
  const bool column = (s.rank() >= 2 && s.cols() == 1) || s.rank() == 1;
  if (!column) throw shape_error("broadcast_cols: " + s.str() + " is not a column");
  if (cols < 0) throw shape_error("broadcast_cols: negative column count " + std::to_string(cols));
  const index_t r = s.size();
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{r, cols}, x.requires_grad());
  y.value() = broadcast_cols(View<T, B>(x.value().data(), Shape{r, 1}), cols);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        bool acc;
        View<T, B> g = tp.grad_for_write(n.in[0], acc);
        View<T, B> gc(g.data(), Shape{g.size(), 1});
        if (acc)
          gc += sum_cols(tp.out_grad(n));
        else
          gc = sum_cols(tp.out_grad(n));
      },
      y, {x.id()});
  return y;
}

// ---- broadcast_scalar: a one-element x repeated over `shape`.  dx += sum of dy.
template <class T, class B>
Var<T, B> broadcast_scalar(Var<T, B> x, Shape shape) {
  if (x.shape().size() != 1)
    throw shape_error("broadcast_scalar: " + x.shape().str() + " does not hold one element");
  auto& t = x.tape();
  Var<T, B> y = t.make(shape, x.requires_grad());
  y.value() = broadcast_scalar(x.value(), shape);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        bool acc;
        View<T, B> g = tp.grad_for_write(n.in[0], acc);
        if (acc)
          g += sum_all(tp.out_grad(n));
        else
          g = sum_all(tp.out_grad(n));
      },
      y, {x.id()});
  return y;
}

// ---- gather_rows: y[i] = x[idx[i]] for i < n (rows of any trailing shape) -> [n x ...].
// dx[idx[i]] += dy[i], repeated indices adding up (in the order of i: deterministic).
// The indices live on the host and are copied into the tape; each must be < x's rows.
template <class T, class B>
Var<T, B> gather_rows(Var<T, B> x, std::span<const std::uint32_t> idx) {
  const Shape s = x.shape();
  if (s.rank() < 2) throw shape_error("gather_rows: " + s.str() + " has no row axis");
  for (std::size_t i = 0; i < idx.size(); ++i)
    if (static_cast<index_t>(idx[i]) >= s.rows())
      throw value_error("gather_rows: index " + std::to_string(idx[i]) + " at position " +
                        std::to_string(i) + " is out of range for " + s.str());
  auto& t = x.tape();
  const auto count = static_cast<index_t>(idx.size());
  Var<T, B> y = t.make(s.with_rows(count), x.requires_grad());
  B::gather_rows(y.value().data(), x.value().data(), idx.data(), count, s.cols());
  auto* node = t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        bool acc;
        View<T, B> g = tp.grad_for_write(n.in[0], acc);
        if (!acc) g = Constant<T, B>{g.shape(), T(0)};
        const auto ids = tp.indices(n.i[0]);
        B::scatter_add_rows(g.data(), tp.out_grad(n).data(), ids.data(),
                            static_cast<index_t>(ids.size()), g.cols());
      },
      y, {x.id()});
  if (node) node->i[0] = t.store_indices(idx);
  return y;
}
template <class T, class B>
Var<T, B> gather_rows(Var<T, B> x, const std::vector<std::uint32_t>& idx) {
  return gather_rows(x, std::span<const std::uint32_t>(idx));
}

// ---- transpose of a matrix: y = x^T ([R x C] -> [C x R]).  dx += dy^T.
template <class T, class B>
Var<T, B> transpose(Var<T, B> x) {
  if (x.shape().rank() != 2)
    throw shape_error("transpose: " + x.shape().str() + " is not a matrix");
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{x.shape().cols(), x.shape().rows()}, x.requires_grad());
  y.value() = transpose(x.value());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], transpose(tp.out_grad(n)));
      },
      y, {x.id()});
  return y;
}

// ---- reshape: the same elements under another shape of equal size (no copy).
// dx += dy read with x's shape.
template <class T, class B>
Var<T, B> reshape(Var<T, B> x, Shape shape) {
  if (shape.size() != x.shape().size())
    throw shape_error("reshape: " + x.shape().str() + " has " + std::to_string(x.shape().size()) +
                      " elements, " + shape.str() + " needs " + std::to_string(shape.size()));
  auto& t = x.tape();
  Var<T, B> y = t.alias(x.value().data(), shape, x.requires_grad());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const View<T, B> dy = tp.out_grad(n);
        tp.accumulate(n.in[0], View<T, B>(dy.data(), tp.shape(n.in[0])));
      },
      y, {x.id()});
  return y;
}

}  // namespace siam

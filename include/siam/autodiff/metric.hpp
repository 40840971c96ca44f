// The geometry metric-learning losses are written in: row normalisation, the matrix of
// squared distances between two sets of embeddings (one GEMM), and cosine similarities.
#pragma once

#include <string>

#include "siam/autodiff/ops.hpp"

namespace siam {

// ---- l2_normalize_rows: y_i = x_i / max(|x_i|, eps) for each row i (as PyTorch's
// F.normalize). With d_i = max(|x_i|, eps):
//   |x_i| > eps:  dx_i += (dy_i - y_i <y_i, dy_i>) / d_i
//   otherwise:    dx_i += dy_i / eps            (a zero row stays zero, no NaN)
template <class T, class B>
Var<T, B> l2_normalize_rows(Var<T, B> x, T eps = T(1e-12)) {
  const Shape s = x.shape();
  if (s.rank() < 2) throw shape_error("l2_normalize_rows: " + s.str() + " has no row axis");
  if (!(eps > 0))
    throw value_error("l2_normalize_rows: eps must be > 0, got " + std::to_string(eps));
  auto& t = x.tape();
  const index_t r = s.rows(), c = s.cols();
  Var<T, B> norm = t.make(Shape{r, 1}, false);  // |x_i|, kept for the backward
  Var<T, B> dot = t.make(Shape{r, 1}, false);   // the backward's scratch
  Var<T, B> y = t.make(s, x.requires_grad());
  View<T, B> nv = norm.value();
  nv = sum_cols(square(x.value()));
  nv = sqrt(nv);
  y.value() = x.value() / broadcast_cols(maximum(nv, eps), c);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const View<T, B> dy = tp.out_grad(n), yo = tp.value(n.out), nrm = tp.value(n.in[1]);
        View<T, B> proj = tp.value(n.in[2]);
        const T e = n.s[0];
        const index_t w = yo.cols();
        proj = sum_cols(yo * dy);
        proj = proj * step(nrm - e);  // the projection applies where the norm exceeds eps
        tp.accumulate(n.in[0],
                      (dy - yo * broadcast_cols(proj, w)) / broadcast_cols(maximum(nrm, e), w));
      },
      y, {x.id(), norm.id(), dot.id()}, eps);
  return y;
}

// ---- pairwise_sq_distances: D[i, j] = max(|a_i|^2 + |b_j|^2 - 2 <a_i, b_j>, 0) for a
// [n x d] and b [m x d] -> [n x m], through one GEMM (the clamp removes the rounding
// that can make a distance of equal rows slightly negative).
// With G = dy [D > 0]:  da_i += 2 sum_j G_ij (a_i - b_j);  db_j += 2 sum_i G_ij (b_j - a_i).
// The backward is two GEMMs and two row/column totals.
template <class T, class B>
Var<T, B> pairwise_sq_distances(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("pairwise_sq_distances", a, b);
  const Shape sa = a.shape(), sb = b.shape();
  if (sa.rank() != 2 || sb.rank() != 2 || sa.cols() != sb.cols())
    throw shape_error("pairwise_sq_distances: " + sa.str() + " and " + sb.str() +
                      " are not two matrices of rows of one width");
  auto& t = a.tape();
  const index_t n = sa.rows(), m = sb.rows();
  Var<T, B> na = t.make(Shape{n, 1}, false);  // |a_i|^2, then the backward's row totals
  Var<T, B> nb = t.make(Shape{m, 1}, false);  // |b_j|^2, then the backward's column totals
  Var<T, B> g = t.make(Shape{n, m}, false);   // the backward's scratch
  Var<T, B> y = t.make(Shape{n, m}, detail::any_grad({a, b}));
  View<T, B> nav = na.value(), nbv = nb.value(), yv = y.value();
  nav = sum_cols(square(a.value()));
  nbv = sum_cols(square(b.value()));
  yv = matmul(a.value(), b.value(), false, true);
  yv = relu(broadcast_cols(nav, m) + broadcast_rows(View<T, B>(nbv.data(), Shape{m}), n) -
            T(2) * yv);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& nd) {
        const View<T, B> A = tp.value(nd.in[0]), Bv = tp.value(nd.in[1]);
        View<T, B> rs = tp.value(nd.in[2]), cs = tp.value(nd.in[3]), gs = tp.value(nd.in[4]);
        gs = T(-2) * relu_grad(tp.out_grad(nd), tp.value(nd.out));  // gs = -2 G
        // da_i = -rowsum(gs)_i a_i + (gs b)_i;  db_j = (gs^T a)_j - colsum(gs)_j b_j
        if (tp.requires_grad(nd.in[0])) {
          rs = sum_cols(gs);
          tp.accumulate(nd.in[0], -broadcast_cols(rs, A.cols()) * A);
          tp.accumulate(nd.in[0], matmul(gs, Bv));
        }
        if (tp.requires_grad(nd.in[1])) {
          View<T, B> csr(cs.data(), Shape{cs.size()});
          csr = sum_rows(gs);
          tp.accumulate(nd.in[1], -broadcast_cols(cs, Bv.cols()) * Bv);
          tp.accumulate(nd.in[1], matmul(gs, A, true, false));
        }
      },
      y, {a.id(), b.id(), na.id(), nb.id(), g.id()});
  return y;
}

// ---- cosine_similarity_matrix: S[i, j] = <a_i, b_j> / (max(|a_i|, eps) max(|b_j|, eps))
// -> [n x m]; composed of l2_normalize_rows and one GEMM (gradients follow from those).
template <class T, class B>
Var<T, B> cosine_similarity_matrix(Var<T, B> a, Var<T, B> b, T eps = T(1e-12)) {
  detail::require_same_tape("cosine_similarity_matrix", a, b);
  if (a.shape().rank() != 2 || b.shape().rank() != 2 || a.shape().cols() != b.shape().cols())
    throw shape_error("cosine_similarity_matrix: " + a.shape().str() + " and " + b.shape().str() +
                      " are not two matrices of rows of one width");
  Var<T, B> an = l2_normalize_rows(a, eps);
  Var<T, B> bn = a.id() == b.id() ? an : l2_normalize_rows(b, eps);
  return matmul(an, bn, false, true);
}

}  // namespace siam

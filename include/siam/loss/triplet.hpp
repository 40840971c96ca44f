// Triplet margin loss (Weinberger and Saul 2009; Schroff et al. 2015), written only with
// public ops: it is also the worked example of docs/losses.md, "Writing your own loss".
//
// For anchors A, positives P and negatives N [n x D]:
//   d(x, y) = sqrt(|x - y|^2 + 1e-6)  (Euclidean, the default)  or  |x - y|^2  (squared)
//   loss = reduce_i max(d(A_i, P_i) - d(A_i, N_i) + margin, 0),   reduce = mean (default) or sum
// The gradient follows from the ops it is built of (autodiff).
#pragma once

#include <string>

#include "siam/autodiff/elementwise.hpp"
#include "siam/autodiff/reduce.hpp"
#include "siam/loss/reduction.hpp"

namespace siam {

enum class Distance { euclidean, squared };

struct TripletOptions {
  double margin = 1.0;  ///< >= 0
  Distance distance = Distance::euclidean;
  Reduction reduction = Reduction::mean;
};

namespace detail {
inline constexpr double triplet_eps = 1e-6;
/// Row-wise distances [n x 1] between two [n x D] batches.
template <class T, class B>
Var<T, B> row_distances(Var<T, B> x, Var<T, B> y, Distance d) {
  Var<T, B> q = sum(square(x - y), 1, true);
  return d == Distance::squared ? q : sqrt(q + static_cast<T>(triplet_eps));
}
template <class T, class B>
Var<T, B> reduce(Var<T, B> terms, Reduction r) {
  if (r == Reduction::sum || terms.shape().size() == 0) return sum(terms);
  return mean(terms);
}
}  // namespace detail

/// Throws shape_error unless anchor, positive and negative are [n x D] of one shape, and
/// value_error for a negative margin. An empty batch gives 0.
template <class T, class B>
Var<T, B> triplet_loss(Var<T, B> anchor, Var<T, B> positive, Var<T, B> negative,
                       TripletOptions opt = {}) {
  const Shape s = anchor.shape();
  if (s.rank() != 2 || !(positive.shape() == s) || !(negative.shape() == s))
    throw shape_error("triplet_loss: anchor " + s.str() + ", positive " + positive.shape().str() +
                      " and negative " + negative.shape().str() +
                      " must be three n x D matrices of one shape");
  if (!(opt.margin >= 0))
    throw value_error("triplet_loss: margin must be >= 0, got " + std::to_string(opt.margin));
  Var<T, B> dap = detail::row_distances(anchor, positive, opt.distance);
  Var<T, B> dan = detail::row_distances(anchor, negative, opt.distance);
  return detail::reduce(relu(dap - dan + static_cast<T>(opt.margin)), opt.reduction);
}

/// The triplet loss of a stacked batch [3n x D]: rows 0..n-1 anchors, n..2n-1 positives,
/// 2n..3n-1 negatives (how a trainer runs the three branches as one batch).
template <class T, class B>
Var<T, B> triplet_loss_stacked(Var<T, B> f, TripletOptions opt = {}) {
  const Shape s = f.shape();
  if (s.rank() != 2 || s.rows() % 3 != 0)
    throw shape_error("triplet_loss_stacked: features " + s.str() +
                      " must be a 3n x D matrix (anchors, positives, negatives)");
  const index_t n = s.rows() / 3;
  return triplet_loss(slice_rows(f, 0, n), slice_rows(f, n, n), slice_rows(f, 2 * n, n), opt);
}

}  // namespace siam

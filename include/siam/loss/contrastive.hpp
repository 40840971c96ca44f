// Contrastive loss (Hadsell, Chopra and LeCun, 2006) as one fused differentiable op.
//
// For features F1, F2 [N x D] and pair labels y [N] (1 = similar, 0 = dissimilar):
//   d_i  = sqrt(sum_j (F1_ij - F2_ij)^2 + 1e-6)        (the 1e-6 keeps d > 0)
//   loss = s * SUM_i [ y_i d_i^2 + (1 - y_i) max(margin - d_i, 0)^2 ],
//   s = 0.5 (sum over the batch, the default) or 0.5 / N (mean).
// Gradient: with c_i = 2 s [ y_i - (1 - y_i) max(margin - d_i, 0) / d_i ],
//   dF1_i += dL c_i (F1_i - F2_i);   dF2_i -= dL c_i (F1_i - F2_i).
// ContrastiveOptions::squared selects the hinge on squared distances instead (below).
#pragma once

#include <cmath>
#include <string>

#include "siam/autodiff/ops.hpp"
#include "siam/loss/reduction.hpp"

namespace siam {

struct ContrastiveOptions {
  double margin = 0.3;
  Reduction reduction = Reduction::sum;
  /// Check on the host that every label is 0 or 1 (costs a device-to-host copy on a GPU).
  bool check_labels = true;
  /// The hinge on squared distances (Caffe's `legacy_version` form):
  ///   s SUM_i [ y_i q_i + (1 - y_i) max(margin - q_i, 0) ],  q_i = |F1_i - F2_i|^2,
  /// with gradient coefficient c_i = 2 s [ y_i - (1 - y_i) [margin > q_i] ]. The margin is
  /// then a squared distance. Off by default: the form above (the seed's).
  bool squared = false;
};

namespace detail {
inline constexpr double contrastive_eps = 1e-6;
}

/// Throws value_error naming the first label that is not 0 or 1.
template <class T>
void check_pair_labels(const T* labels, index_t n) {
  for (index_t i = 0; i < n; ++i)
    if (!(labels[i] == T(0) || labels[i] == T(1)))
      throw value_error("contrastive_loss: label " + std::to_string(i) + " is " +
                        std::to_string(labels[i]) + "; pair labels must be 0 or 1");
}

namespace detail {

/// A backend with the loss as two fused primitives (see Cpu::contrastive_forward and
/// Cpu::contrastive_backward); other backends compose it from expressions.
template <class B, class T>
concept FusedContrastive = requires(const T* p, T* q, index_t n, T s, bool f) {
  B::contrastive_forward(p, p, p, n, n, s, s, s, q, q);
  B::contrastive_backward(p, p, p, p, n, n, q, f, q, f);
};

// What both forms of the loss share: the checks and the forward pass. Fused: `c`
// [N x 1] holds the per-pair gradient coefficients, computed with the loss.
// Composed: `d` [N x 1] holds the distances and `c` is the backward's scratch.
template <class T, class B>
struct ContrastiveParts {
  Var<T, B> d, c, loss;
  T margin, scale;
  bool fused;  // computed by the backend's primitive (else composed)
};

template <class T, class B>
ContrastiveParts<T, B> contrastive_forward(const char* op, Tape<T, B>& t, const View<T, B>& f1,
                                           const View<T, B>& f2, Var<T, B> labels,
                                           const ContrastiveOptions& opt, bool requires_grad) {
  const index_t n = f1.rows();
  const Shape sl = labels.shape();
  if (sl.size() != n || !(sl.rank() == 1 || sl.cols() == 1))
    throw shape_error(std::string(op) + ": labels " + sl.str() + " do not match " +
                      std::to_string(n) + " pairs of features " + f1.shape().str());
  if (!(opt.margin > 0))
    throw value_error(std::string(op) + ": margin must be > 0, got " + std::to_string(opt.margin));
  if (opt.check_labels) {  // on the host in place; a device copies its labels back
    if constexpr (B::is_host) {
      check_pair_labels(labels.value().data(), n);
    } else {
      const auto host = labels.value().to_vector();
      check_pair_labels(host.data(), n);
    }
  }
  const T m = static_cast<T>(opt.margin);
  const T scale = opt.reduction == Reduction::sum ? T(0.5) : T(0.5) / static_cast<T>(n ? n : 1);
  const View<T, B> y(labels.value().data(), Shape{n, 1});
  if constexpr (FusedContrastive<B, T>) {
    if (!opt.squared) {
      ContrastiveParts<T, B> p{
          Var<T, B>{}, t.make(Shape{n, 1}, false), t.make(Shape{1}, requires_grad), m, scale, true};
      B::contrastive_forward(f1.data(), f2.data(), y.data(), n, f1.cols(), m, scale,
                             static_cast<T>(contrastive_eps), p.c.value().data(),
                             p.loss.value().data());
      return p;
    }
  }
  ContrastiveParts<T, B> p{
      t.make(Shape{n, 1}, false), t.make(Shape{n, 1}, false), Var<T, B>{}, m, scale, false};
  View<T, B> dv = p.d.value();
  dv = sum_cols(square(f1 - f2));
  p.loss = t.make(Shape{1}, requires_grad);
  if (opt.squared) {  // dv holds the squared distances q
    p.loss.value() = sum_all(scale * (y * dv + (T(1) - y) * relu(m - dv)));
  } else {
    dv = sqrt(dv + static_cast<T>(contrastive_eps));
    p.loss.value() = sum_all(scale * (y * square(dv) + (T(1) - y) * square(relu(m - dv))));
  }
  return p;
}

// The backward of both forms: g1 (+)= dL c (f1 - f2) and g2 (+)= dL c (f2 - f1), where
// a null g1 or g2 is skipped and acc1/acc2 say whether to add or assign.
// `d` and `c` are the slots of ContrastiveParts; `labels` is read by the composed form.
template <class T, class B>
void contrastive_backward(Tape<T, B>& t, const typename Tape<T, B>::Node& nd, const View<T, B>& f1,
                          const View<T, B>& f2, std::uint32_t labels, std::uint32_t d,
                          std::uint32_t c, T* g1, bool acc1, T* g2, bool acc2) {
  const index_t n = f1.rows(), cols = f1.cols();
  if constexpr (FusedContrastive<B, T>) {
    if (nd.i[0] == 1) {  // ContrastiveParts::fused
      B::contrastive_backward(f1.data(), f2.data(), t.value(c).data(), t.out_grad(nd).data(), n,
                              cols, g1, acc1, g2, acc2);
      return;
    }
  }
  {
    // c_i = 2 s dL [y_i - (1 - y_i) max(m - d_i, 0) / d_i] (squared: [y_i - (1 - y_i)
    // [m > q_i]]), into the scratch slot.
    const View<T, B> dv = t.value(d);
    const View<T, B> y(t.value(labels).data(), Shape{n, 1});
    const T m = nd.s[0], scale = nd.s[1];
    View<T, B> cv = t.value(c);
    if (nd.i[1] == 1)
      cv = (T(2) * scale) * broadcast_scalar(t.out_grad(nd), cv.shape()) *
           (y - (T(1) - y) * step(m - dv));
    else
      cv = (T(2) * scale) * broadcast_scalar(t.out_grad(nd), cv.shape()) *
           (y - (T(1) - y) * relu(m - dv) / dv);
    auto write = [&](T* g, bool acc, const auto& e) {
      if (!g) return;
      View<T, B> gv(g, f1.shape());
      if (acc)
        gv += e;
      else
        gv = e;
    };
    write(g1, acc1, broadcast_cols(cv, cols) * (f1 - f2));
    write(g2, acc2, broadcast_cols(cv, cols) * (f2 - f1));
  }
}

}  // namespace detail

/// The contrastive loss of feature batches f1, f2 [N x D] with labels [N] or [N x 1].
/// Throws shape_error on mismatched shapes, value_error on a label other than 0/1 or
/// margin <= 0. The result has one element.
template <class T, class B>
Var<T, B> contrastive_loss(Var<T, B> f1, Var<T, B> f2, Var<T, B> labels,
                           ContrastiveOptions opt = {}) {
  detail::require_same_tape("contrastive_loss", f1, f2);
  const Shape s1 = f1.shape(), s2 = f2.shape();
  if (!(s1 == s2) || s1.rank() != 2)
    throw shape_error("contrastive_loss: features " + s1.str() + " and " + s2.str() +
                      " must be two N x D matrices of the same shape");
  auto& t = f1.tape();
  auto p = detail::contrastive_forward("contrastive_loss", t, f1.value(), f2.value(), labels, opt,
                                       detail::any_grad({f1, f2}));
  auto* node = t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        bool acc1 = false, acc2 = false;
        T* g1 = tp.requires_grad(n.in[0]) ? tp.grad_for_write(n.in[0], acc1).data() : nullptr;
        T* g2 = tp.requires_grad(n.in[1]) ? tp.grad_for_write(n.in[1], acc2).data() : nullptr;
        detail::contrastive_backward(tp, n, tp.value(n.in[0]), tp.value(n.in[1]), n.in[2], n.in[3],
                                     n.in[4], g1, acc1, g2, acc2);
      },
      p.loss, {f1.id(), f2.id(), labels.id(), p.d.id(), p.c.id()}, p.margin, p.scale);
  if (node) {
    node->i[0] = p.fused;
    node->i[1] = opt.squared;
  }
  return p.loss;
}

/// The contrastive loss of a stacked batch F [2N x D]: rows 0..N-1 are the first images
/// of the N pairs, rows N..2N-1 the second ones (how a Siamese trainer runs both
/// branches as one batch). Same value and gradient as
/// contrastive_loss(slice_rows(F, 0, N), slice_rows(F, N, N), labels), in fewer passes:
/// dF[0:N) += c (F1 - F2) and dF[N:2N) -= c (F1 - F2), written straight into dF.
template <class T, class B>
Var<T, B> contrastive_loss_stacked(Var<T, B> f, Var<T, B> labels, ContrastiveOptions opt = {}) {
  const Shape s = f.shape();
  if (s.rank() != 2 || s.rows() % 2 != 0)
    throw shape_error("contrastive_loss_stacked: features " + s.str() +
                      " must be a 2N x D matrix (N first images, then N second images)");
  const index_t n = s.rows() / 2;
  auto& t = f.tape();
  const View<T, B> fv = f.value();
  auto p = detail::contrastive_forward("contrastive_loss_stacked", t, fv.row_slice(0, n),
                                       fv.row_slice(n, n), labels, opt, f.requires_grad());
  auto* node = t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& nd) {
        const View<T, B> fvb = tp.value(nd.in[0]);
        const index_t half = fvb.rows() / 2;
        bool acc = false;
        const View<T, B> g = tp.grad_for_write(nd.in[0], acc);
        detail::contrastive_backward(tp, nd, fvb.row_slice(0, half), fvb.row_slice(half, half),
                                     nd.in[1], nd.in[2], nd.in[3], g.data(), acc,
                                     g.row_slice(half, half).data(), acc);
      },
      p.loss, {f.id(), labels.id(), p.d.id(), p.c.id()}, p.margin, p.scale);
  if (node) {
    node->i[0] = p.fused;
    node->i[1] = opt.squared;
  }
  return p.loss;
}

}  // namespace siam

// Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_ with norm_type 2):
//   norm = sqrt(sum over every parameter and element of g^2)
//   if norm > max_norm:  g *= max_norm / (norm + 1e-6)      (every gradient, same factor)
// The squares of all gradients are summed into ONE scalar of the workspace (each
// parameter's total accumulates into it on the device, in parameter order, so the
// result is deterministic), which is read once; the scale is then one fused pass over
// all gradients (one batch: one kernel launch on a GPU). The workspace keeps the scalar,
// so the steady state allocates nothing.
//
// A non-finite norm (a NaN or Inf gradient) throws numeric_error naming the norm, unless
// error_if_nonfinite is false: then the gradients are left as they are and the norm is
// returned. (PyTorch's default is not to throw; siam's is, as nothing good follows.)
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "siam/optim/optimizer.hpp"

namespace siam::optim {

/// What clip_grad_norm keeps between calls: the accumulated sum of squares.
template <class T, class B>
struct ClipWorkspace {
  Tensor<T, B> sum_sq{Shape{1}};
};

/// The global L2 norm of the gradients of `params` (before clipping); scales them to
/// max_norm when it is larger. max_norm may be +inf (measure only). Throws value_error
/// for max_norm <= 0 or NaN, numeric_error for a non-finite norm (see above).
template <class T, class B>
double clip_grad_norm(const std::vector<Parameter<T, B>*>& params, double max_norm,
                      ClipWorkspace<T, B>& ws, bool error_if_nonfinite = true) {
  if (!(max_norm > 0))
    throw value_error("clip_grad_norm: max_norm must be > 0, got " + siam::detail::fmt(max_norm));
  detail::check_params("clip_grad_norm", params);
  if (ws.sum_sq.shape() != Shape{1}) ws.sum_sq.resize(Shape{1});
  bool first = true;
  for (auto* p : params) {
    const Tensor<T, B>& g = p->gradient();
    if (g.size() == 0) continue;
    if (first)
      ws.sum_sq = sum_all(square(g));
    else
      ws.sum_sq += sum_all(square(g));
    first = false;
  }
  if (first) return 0;  // no gradient elements at all
  const double norm = std::sqrt(static_cast<double>(ws.sum_sq.item()));
  if (!std::isfinite(norm)) {
    if (error_if_nonfinite)
      throw numeric_error("clip_grad_norm: the gradients' total norm is " +
                          siam::detail::fmt(norm) + " (a NaN or Inf gradient)");
    return norm;
  }
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1) return norm;  // PyTorch clamps the factor at 1: g * 1 is g
  const T c = T(coef);
  detail::fused_over<T, B>(params.size(), [&](std::size_t i) {
    View<T, B> g = params[i]->gradient().view();
    return fused_group(assign_to(g, g * c));
  });
  return norm;
}

}  // namespace siam::optim

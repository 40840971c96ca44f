// Batch normalisation on tape variables, forward and backward side by side: over features
// ([N x C], after a Dense layer) and over channels ([N x C x L] or [N x C x H x W], after a
// convolution). Channel c's statistics run over every example and position: M = N * S values,
// S = L or H * W (1 for features).
//
// Written with expressions and backend reductions only, so it runs on every backend. The
// data is seen as [N*C x S] planes: a reduction is a per-plane sum (sum_cols) followed by a
// per-channel sum of the N planes (sum_rows of [N x C]); a per-channel value reaches the data
// through a per-plane copy [N*C x 1] broadcast over the S columns. Each pass over the data is
// one fused loop (kernel): the training forward reads it three times (sum, centred sum of
// squares, output), the backward three times (sum of dy, sum of dy (x - mean), dx).
// Scratch is a tape slot, so a steady step allocates nothing. On a host backend the training
// forward and its backward run in the host engine instead (backend/batchnorm_host.hpp: one
// task per channel, two passes each way); the expression path is the device one.
// batch_norm_relu is max(0, batch_norm(x)) as one op: on a host backend the ReLU is folded
// into the engine's passes (no pass, no tensor of its own); elsewhere it is the two ops.
#pragma once

#include <string>

#include "siam/autodiff/ops.hpp"
#include "siam/autodiff/tape.hpp"
#include "siam/backend/batchnorm_host.hpp"

namespace siam {

/// Running statistics that a training-mode batch_norm updates, PyTorch's way:
/// mean <- (1 - momentum) mean + momentum batch_mean,
/// var  <- (1 - momentum) var  + momentum batch_var * M / (M - 1)   (unbiased).
/// Null pointers: nothing is updated.
template <class T, class B>
struct BatchNormRunning {
  Tensor<T, B>* mean = nullptr;
  Tensor<T, B>* var = nullptr;
  T momentum = T(0.1);
};

/// Where batch_norm finds the channels: axis 1 (`channels`: [N x C], [N x C x L],
/// [N x C x H x W]) or, `blocked`, the channel-blocked layout [N x C/K x H x W x K] of
/// autodiff/layout.hpp, K = 8 or 16 (oneDNN's blocks; host backends, training mode).
enum class BnLayout { channels, blocked };

namespace detail {

/// Channels C and positions S of a batch-norm input, and its channel block k (1: channels
/// first; K: [N x C/K x H x W x K]); shape_error names the shapes.
struct BnGeometry {
  index_t n = 0, c = 0, s = 1, k = 1;
  index_t count() const { return n * s; }
};

inline BnGeometry bn_geometry(const char* op, const Shape& x, const Shape& gamma, const Shape& beta,
                              BnLayout layout = BnLayout::channels) {
  auto fail = [&](const std::string& why) {
    throw shape_error(std::string(op) + ": " + why + " (input " + x.str() + ", weight " +
                      gamma.str() + ", bias " + beta.str() + ")");
  };
  BnGeometry g;
  if (layout == BnLayout::blocked) {
    if (x.rank() != 5 || (x[4] != 8 && x[4] != 16))
      fail("a channel-blocked input must be [N x C/K x H x W x K], K = 8 or 16");
    g = BnGeometry{x[0], x[1] * x[4], x[2] * x[3], x[4]};
  } else {
    if (x.rank() < 2) fail("the input must be [N x C], [N x C x L] or [N x C x H x W]");
    g = BnGeometry{x[0], x[1], 1, 1};
    for (int d = 2; d < x.rank(); ++d)
      g.s *= x[d];
  }
  if (gamma.rank() != 1 || gamma[0] != g.c || beta.rank() != 1 || beta[0] != g.c)
    fail("the weight and bias must be [" + std::to_string(g.c) + "]");
  return g;
}

// out[C] = sum over the N planes of each channel of the per-plane sums of e ([N*C x S]),
// `plane` [N*C] scratch.
template <class T, class B, class E>
void bn_channel_sum(const BnGeometry& g, const E& e, T* plane, T* out) {
  View<T, B>(plane, Shape{g.n * g.c, 1}) = sum_cols(e);
  View<T, B>(out, Shape{g.c}) = sum_rows(View<T, B>(plane, Shape{g.n, g.c}));
}

// rep[N*C] = v[C] repeated for each of the N examples (v an expression of shape [1 x C]).
template <class T, class B, class E>
void bn_repeat(const BnGeometry& g, const E& v, T* rep) {
  View<T, B>(rep, Shape{g.n, g.c}) = broadcast_rows(v, g.n);
}

// The scratch slot's layout: five per-channel vectors, then four per-plane ones.
template <class T>
struct BnWork {
  T *mean, *invstd, *a, *b, *c, *plane, *r1, *r2, *r3;
  BnWork(T* w, const BnGeometry& g) {
    const index_t C = g.c, P = g.n * g.c;
    mean = w, invstd = w + C, a = w + 2 * C, b = w + 3 * C, c = w + 4 * C;
    plane = w + 5 * C, r1 = plane + P, r2 = r1 + P, r3 = r2 + P;
  }
  static index_t size(const BnGeometry& g) { return 5 * g.c + 4 * g.n * g.c; }
};

template <class T, class B>
View<T, B> row_of(T* p, index_t c) {
  return View<T, B>(p, Shape{1, c});
}

// y = x * a[c] + b[c] (per-channel a, b given as per-plane copies r1, r2).
template <class T, class B>
void bn_affine(const BnGeometry& g, const View<T, B>& x, View<T, B> y, T* r1, T* r2) {
  const Shape ps{g.n * g.c, g.s}, rs{g.n * g.c, 1};
  View<T, B>(y.data(), ps) = View<T, B>(x.data(), ps) * broadcast_cols(View<T, B>(r1, rs), g.s) +
                             broadcast_cols(View<T, B>(r2, rs), g.s);
}

// Backward of the training forward. With xhat = (x - mean) invstd, M values per channel:
//   dbeta[c]  += sum dy,   dgamma[c] += sum dy xhat,
//   dx        += (gamma invstd / M) (M dy - sum dy - xhat sum dy xhat)
//              = A[c] dy + Bc[c] x + Cc[c]   with A = gamma invstd, k = A / M,
//                Bc = -k invstd sum(dy xhat), Cc = -k sum(dy) - Bc mean.
template <class T, class B, bool Relu = false>
void batch_norm_backward(Tape<T, B>& t, const typename Tape<T, B>::Node& n) {
  static_assert(B::is_host || !Relu, "the fused ReLU is a host engine's");
  const BnGeometry g =
      bn_geometry("batch_norm", t.shape(n.in[0]), t.shape(n.in[1]), t.shape(n.in[2]),
                  n.s[1] != T(0) ? BnLayout::blocked : BnLayout::channels);
  if (g.count() == 0) return;
  BnWork<T> w(t.value(n.in[3]).data(), g);
  const Shape ps{g.n * g.c, g.s}, rs{g.n * g.c, 1}, cs{g.c};
  const View<T, B> x(t.value(n.in[0]).data(), ps), dy(t.out_grad(n).data(), ps);
  const View<T, B> gamma = t.value(n.in[1]);
  if constexpr (B::is_host) {
    bool acc = false;
    T* dx = t.requires_grad(n.in[0]) ? t.grad_for_write(n.in[0], acc).data() : nullptr;
    HostBatchNorm<T>::backward(g.n, g.c, g.s, x.data(), dy.data(), gamma.data(), w.mean, w.invstd,
                               w.a, w.b, dx, acc, Relu ? w.plane : nullptr, g.k);
    t.accumulate(n.in[2], View<T, B>(w.a, cs));
    t.accumulate(n.in[1], View<T, B>(w.b, cs));
    return;
  }
  const T m = static_cast<T>(g.count());
  bn_repeat<T, B>(g, row_of<T, B>(w.mean, g.c), w.r1);
  bn_channel_sum<T, B>(g, dy, w.plane, w.a);  // sum dy
  bn_channel_sum<T, B>(g, dy * (x - broadcast_cols(View<T, B>(w.r1, rs), g.s)), w.plane,
                       w.b);                                             // sum dy (x - mean)
  View<T, B>(w.b, cs) = View<T, B>(w.b, cs) * View<T, B>(w.invstd, cs);  // sum dy xhat
  t.accumulate(n.in[2], View<T, B>(w.a, cs));
  t.accumulate(n.in[1], View<T, B>(w.b, cs));
  if (!t.requires_grad(n.in[0])) return;
  const auto G = row_of<T, B>(gamma.data(), g.c), I = row_of<T, B>(w.invstd, g.c);
  const auto Sd = row_of<T, B>(w.a, g.c), Sx = row_of<T, B>(w.b, g.c);
  const auto Mu = row_of<T, B>(w.mean, g.c);
  bn_repeat<T, B>(g, G * I, w.r1);                                          // A
  bn_repeat<T, B>(g, -(G * I / m) * I * Sx, w.r2);                          // Bc
  bn_repeat<T, B>(g, -(G * I / m) * Sd + (G * I / m) * I * Sx * Mu, w.r3);  // Cc
  bool acc = false;
  View<T, B> dx(t.grad_for_write(n.in[0], acc).data(), ps);
  auto e = dy * broadcast_cols(View<T, B>(w.r1, rs), g.s) +
           x * broadcast_cols(View<T, B>(w.r2, rs), g.s) +
           broadcast_cols(View<T, B>(w.r3, rs), g.s);
  if (acc)
    dx += e;
  else
    dx = e;
}

// Backward of the inference forward (fixed statistics, constants): with
// invstd = 1 / sqrt(var + eps) and xhat = (x - mean) invstd:
//   dx += gamma invstd dy,  dgamma += sum dy xhat,  dbeta += sum dy.
template <class T, class B>
void batch_norm_inference_backward(Tape<T, B>& t, const typename Tape<T, B>::Node& n) {
  const BnGeometry g =
      bn_geometry("batch_norm_inference", t.shape(n.in[0]), t.shape(n.in[1]), t.shape(n.in[2]));
  if (g.count() == 0) return;
  BnWork<T> w(t.value(n.in[5]).data(), g);  // invstd, r1 = gamma invstd (from the forward)
  const Shape ps{g.n * g.c, g.s}, rs{g.n * g.c, 1}, cs{g.c};
  const View<T, B> x(t.value(n.in[0]).data(), ps), dy(t.out_grad(n).data(), ps);
  bn_repeat<T, B>(g, row_of<T, B>(t.value(n.in[3]).data(), g.c), w.r2);
  bn_channel_sum<T, B>(g, dy, w.plane, w.a);
  bn_channel_sum<T, B>(g, dy * (x - broadcast_cols(View<T, B>(w.r2, rs), g.s)), w.plane, w.b);
  View<T, B>(w.b, cs) = View<T, B>(w.b, cs) * View<T, B>(w.invstd, cs);
  t.accumulate(n.in[2], View<T, B>(w.a, cs));
  t.accumulate(n.in[1], View<T, B>(w.b, cs));
  if (!t.requires_grad(n.in[0])) return;
  bool acc = false;
  View<T, B> dx(t.grad_for_write(n.in[0], acc).data(), ps);
  auto e = dy * broadcast_cols(View<T, B>(w.r1, rs), g.s);
  if (acc)
    dx += e;
  else
    dx = e;
}

template <class T>
void check_bn_eps(const char* op, T eps) {
  if (!(eps > T(0)))
    throw value_error(std::string(op) + ": eps must be > 0, got " +
                      std::to_string(static_cast<double>(eps)));
}

template <class T, class B>
Var<T, B> batch_norm_impl(const char* op, Var<T, B> x, Var<T, B> gamma, Var<T, B> beta, T eps,
                          BatchNormRunning<T, B> running, bool fuse_relu, BnLayout layout);

}  // namespace detail

// ---- batch_norm (training mode: the batch's own statistics).
// x [N x C (x ...)], gamma, beta [C]. Per channel c over its M = N * S values:
//   mean = sum x / M,  var = sum (x - mean)^2 / M (biased),  invstd = 1 / sqrt(var + eps),
//   y = gamma (x - mean) invstd + beta.
// Backward (xhat = (x - mean) invstd):
//   dx += (gamma invstd / M) (M dy - sum dy - xhat sum(dy xhat)),
//   dgamma += sum dy xhat,  dbeta += sum dy.
// `running`, when given, is updated with momentum (unbiased variance, as PyTorch does).
// An empty batch gives an empty result and updates nothing. Throws shape_error for a rank
// below 2, gamma/beta not [C], or a single value per channel (M = 1: no variance, as
// PyTorch refuses); value_error for eps <= 0.
// `layout` BnLayout::blocked: x is channel-blocked [N x C/K x H x W x K] (C = C/K * K),
// the same normalisation per channel (host backends; value_error on a device).
template <class T, class B>
Var<T, B> batch_norm(Var<T, B> x, Var<T, B> gamma, Var<T, B> beta, T eps = T(1e-5),
                     BatchNormRunning<T, B> running = {}, BnLayout layout = BnLayout::channels) {
  return detail::batch_norm_impl("batch_norm", x, gamma, beta, eps, running, false, layout);
}

// ---- batch_norm_relu: max(0, batch_norm(x, gamma, beta)) in training mode, one op:
//   y = max(0, z), z = gamma (x - mean) invstd + beta;  dz = dy [z > 0] (NaN passes, as
//   relu), then batch_norm's backward with dz.
// The same arguments, errors and running-statistics update as batch_norm. On a host backend
// the ReLU is folded into batch_norm's passes: z is neither stored nor read again, the
// backward recomputes the mask from x. Elsewhere it is relu(batch_norm(...)).
template <class T, class B>
Var<T, B> batch_norm_relu(Var<T, B> x, Var<T, B> gamma, Var<T, B> beta, T eps = T(1e-5),
                          BatchNormRunning<T, B> running = {},
                          BnLayout layout = BnLayout::channels) {
  if constexpr (B::is_host)
    return detail::batch_norm_impl("batch_norm_relu", x, gamma, beta, eps, running, true, layout);
  else
    return relu(
        detail::batch_norm_impl("batch_norm_relu", x, gamma, beta, eps, running, false, layout));
}

namespace detail {
template <class T, class B>
Var<T, B> batch_norm_impl(const char* op, Var<T, B> x, Var<T, B> gamma, Var<T, B> beta, T eps,
                          BatchNormRunning<T, B> running, bool fuse_relu, BnLayout layout) {
  detail::require_same_tape(op, x, gamma);
  detail::require_same_tape(op, x, beta);
  detail::check_bn_eps(op, eps);
  const detail::BnGeometry g =
      detail::bn_geometry(op, x.shape(), gamma.shape(), beta.shape(), layout);
  if (layout == BnLayout::blocked && !B::is_host)
    throw value_error(std::string(op) + ": channel-blocked input " + x.shape().str() + " on the " +
                      B::name + " backend (host backends only)");
  if (g.count() == 1)
    throw shape_error(std::string(op) + ": one value per channel in training mode (input " +
                      x.shape().str() + "): the variance needs at least two");
  auto& t = x.tape();
  const bool rg = x.requires_grad() || gamma.requires_grad() || beta.requires_grad();
  Var<T, B> y = t.make(x.shape(), rg);
  Var<T, B> work = t.make(Shape{detail::BnWork<T>::size(g)}, false);
  if (g.count() > 0) {
    using detail::row_of;
    detail::BnWork<T> w(work.value().data(), g);
    const Shape ps{g.n * g.c, g.s}, rs{g.n * g.c, 1}, cs{g.c};
    const View<T, B> xv(x.value().data(), ps);
    const T m = static_cast<T>(g.count());
    if constexpr (B::is_host) {
      detail::HostBatchNorm<T>::forward(g.n, g.c, g.s, xv.data(), gamma.value().data(),
                                        beta.value().data(), eps, w.mean, w.c, w.invstd,
                                        y.value().data(), fuse_relu ? w.plane : nullptr, g.k);
    } else {
      detail::bn_channel_sum<T, B>(g, xv, w.plane, w.mean);
      View<T, B>(w.mean, cs) = View<T, B>(w.mean, cs) / m;
      detail::bn_repeat<T, B>(g, row_of<T, B>(w.mean, g.c), w.r1);
      detail::bn_channel_sum<T, B>(g, square(xv - broadcast_cols(View<T, B>(w.r1, rs), g.s)),
                                   w.plane, w.c);
      View<T, B>(w.c, cs) = View<T, B>(w.c, cs) / m;  // biased variance
      View<T, B>(w.invstd, cs) = T(1) / sqrt(View<T, B>(w.c, cs) + eps);
      const auto G = row_of<T, B>(gamma.value().data(), g.c);
      const auto I = row_of<T, B>(w.invstd, g.c), Mu = row_of<T, B>(w.mean, g.c);
      detail::bn_repeat<T, B>(g, G * I, w.r1);
      detail::bn_repeat<T, B>(g, row_of<T, B>(beta.value().data(), g.c) - Mu * G * I, w.r2);
      detail::bn_affine<T, B>(g, x.value(), y.value(), w.r1, w.r2);
    }
    if (running.mean && running.var) {
      if (running.mean->shape() != cs || running.var->shape() != cs)
        throw shape_error(std::string(op) + ": running statistics " + running.mean->shape().str() +
                          " and " + running.var->shape().str() + " for " + std::to_string(g.c) +
                          " channels");
      const T mo = running.momentum;
      *running.mean = *running.mean * (T(1) - mo) + View<T, B>(w.mean, cs) * mo;
      *running.var = *running.var * (T(1) - mo) + View<T, B>(w.c, cs) * (mo * m / (m - T(1)));
    }
  }
  const T blocked = layout == BnLayout::blocked ? T(1) : T(0);
  if constexpr (B::is_host)
    if (fuse_relu) {
      t.record(&detail::batch_norm_backward<T, B, true>, y,
               {x.id(), gamma.id(), beta.id(), work.id()}, eps, blocked);
      return y;
    }
  t.record(&detail::batch_norm_backward<T, B>, y, {x.id(), gamma.id(), beta.id(), work.id()}, eps,
           blocked);
  return y;
}
}  // namespace detail

// ---- batch_norm_inference: the same normalisation with fixed statistics (running mean and
// variance [C], read as constants: no gradient flows to them):
//   y = gamma (x - mean) / sqrt(var + eps) + beta;
//   dx += gamma invstd dy,  dgamma += sum dy xhat,  dbeta += sum dy.
// Any batch size, including 1 and 0. Throws as batch_norm for shapes, and shape_error when
// mean/var are not [C].
template <class T, class B>
Var<T, B> batch_norm_inference(Var<T, B> x, Var<T, B> gamma, Var<T, B> beta, Var<T, B> mean,
                               Var<T, B> var, T eps = T(1e-5)) {
  detail::require_same_tape("batch_norm_inference", x, gamma);
  detail::require_same_tape("batch_norm_inference", x, beta);
  detail::require_same_tape("batch_norm_inference", x, mean);
  detail::require_same_tape("batch_norm_inference", x, var);
  detail::check_bn_eps("batch_norm_inference", eps);
  const detail::BnGeometry g =
      detail::bn_geometry("batch_norm_inference", x.shape(), gamma.shape(), beta.shape());
  const Shape cs{g.c};
  if (mean.shape() != cs || var.shape() != cs)
    throw shape_error("batch_norm_inference: running mean " + mean.shape().str() +
                      " and variance " + var.shape().str() + " for input " + x.shape().str() +
                      " (need [" + std::to_string(g.c) + "])");
  auto& t = x.tape();
  const bool rg = x.requires_grad() || gamma.requires_grad() || beta.requires_grad();
  Var<T, B> y = t.make(x.shape(), rg);
  Var<T, B> work = t.make(Shape{detail::BnWork<T>::size(g)}, false);
  if (g.count() > 0) {
    using detail::row_of;
    detail::BnWork<T> w(work.value().data(), g);
    View<T, B>(w.invstd, cs) = T(1) / sqrt(var.value() + eps);
    const auto G = row_of<T, B>(gamma.value().data(), g.c);
    const auto I = row_of<T, B>(w.invstd, g.c), Mu = row_of<T, B>(mean.value().data(), g.c);
    detail::bn_repeat<T, B>(g, G * I, w.r1);
    detail::bn_repeat<T, B>(g, row_of<T, B>(beta.value().data(), g.c) - Mu * G * I, w.r3);
    detail::bn_affine<T, B>(g, x.value(), y.value(), w.r1, w.r3);
  }
  t.record(&detail::batch_norm_inference_backward<T, B>, y,
           {x.id(), gamma.id(), beta.id(), mean.id(), var.id(), work.id()}, eps);
  return y;
}

}  // namespace siam

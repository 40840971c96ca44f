// Channel-blocked activations: [N x C x H x W] (NCHW) as [N x C/K x H x W x K], channel c
// at block c / K, lane c % K: oneDNN's nChw16c / nChw8c, the layout its convolution kernels
// compute in. conv2d reads and writes it without copies on the oneDNN engine
// (conv_block()), and batch_norm / batch_norm_relu / elementwise ops run on it as on NCHW
// (a blocked tensor is an ordinary rank-5 tensor to them). nn::Conv2D writes it in training
// and nn::Sequential returns to NCHW before any layer that does not take it.
// Host backends only: there are no blocked kernels on a device.
#pragma once

#include <string>

#include "siam/autodiff/tape.hpp"
#include "siam/backend/blocked_host.hpp"

namespace siam {

namespace detail {
template <class T, class B>
void require_host_layout(const char* op) {
  if constexpr (!B::is_host)
    throw value_error(std::string(op) + ": channel-blocked tensors are host-only, not on the " +
                      B::name + " backend");
}
}  // namespace detail

// ---- to_blocked: x [N x C x H x W] -> y [N x C/K x H x W x K],
//   y[n, c / K, h, w, c % K] = x[n, c, h, w];   dx[n, c, h, w] += dy[n, c / K, h, w, c % K].
// Throws shape_error for a rank other than 4, K < 1 or C not a multiple of K; value_error on
// a device backend.
template <class T, class B>
Var<T, B> to_blocked(Var<T, B> x, index_t k) {
  const Shape s = x.shape();
  if (s.rank() != 4 || k < 1 || s[1] % k != 0)
    throw shape_error("to_blocked: input " + s.str() + ", block " + std::to_string(k) +
                      ": expected [N x C x H x W] with C a multiple of the block");
  detail::require_host_layout<T, B>("to_blocked");
  auto& t = x.tape();
  Var<T, B> y = t.make(Shape{s[0], s[1] / k, s[2], s[3], k}, x.requires_grad());
  detail::HostBlocked<T>::template block<false>(s[0], s[1], s[2] * s[3], k, x.value().data(),
                                                y.value().data());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        if (!tp.requires_grad(n.in[0])) return;
        const Shape xs = tp.shape(n.in[0]);
        const index_t kb = tp.shape(n.out)[4];
        bool acc = false;
        T* dx = tp.grad_for_write(n.in[0], acc).data();
        const T* dy = tp.out_grad(n).data();
        if (acc)
          detail::HostBlocked<T>::template unblock<true>(xs[0], xs[1], xs[2] * xs[3], kb, dy, dx);
        else
          detail::HostBlocked<T>::template unblock<false>(xs[0], xs[1], xs[2] * xs[3], kb, dy, dx);
      },
      y, {x.id()});
  return y;
}

// ---- from_blocked: x [N x C/K x H x W x K] -> y [N x C x H x W], to_blocked's inverse:
//   y[n, c, h, w] = x[n, c / K, h, w, c % K];   dx[n, c / K, h, w, c % K] += dy[n, c, h, w].
// Throws shape_error for a rank other than 5; value_error on a device backend.
template <class T, class B>
Var<T, B> from_blocked(Var<T, B> x) {
  const Shape s = x.shape();
  if (s.rank() != 5 || s[4] < 1)
    throw shape_error("from_blocked: input " + s.str() + ", expected [N x C/K x H x W x K]");
  detail::require_host_layout<T, B>("from_blocked");
  auto& t = x.tape();
  const index_t c = s[1] * s[4];
  Var<T, B> y = t.make(Shape{s[0], c, s[2], s[3]}, x.requires_grad());
  detail::HostBlocked<T>::template unblock<false>(s[0], c, s[2] * s[3], s[4], x.value().data(),
                                                  y.value().data());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        if (!tp.requires_grad(n.in[0])) return;
        const Shape xs = tp.shape(n.in[0]);
        const index_t channels = xs[1] * xs[4], hw = xs[2] * xs[3];
        bool acc = false;
        T* dx = tp.grad_for_write(n.in[0], acc).data();
        const T* dy = tp.out_grad(n).data();
        if (acc)
          detail::HostBlocked<T>::template block<true>(xs[0], channels, hw, xs[4], dy, dx);
        else
          detail::HostBlocked<T>::template block<false>(xs[0], channels, hw, xs[4], dy, dx);
      },
      y, {x.id()});
  return y;
}

}  // namespace siam

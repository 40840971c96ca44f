// Convolutional ops on tape variables, NCHW: conv2d, max_pool2d and flatten. Forward and
// backward side by side with the gradient contract, as in autodiff/ops.hpp.
//
// One op name, several engines: on a host backend the float convolution runs on the engine
// chosen by set_conv_engine() (im2col + the backend's GEMM, always there; oneDNN when
// <siam/backend/conv_dnnl.hpp> is built in), double always on im2col; on the CUDA backend
// conv2d runs on cuDNN and max_pool2d on siam's kernels (<siam/backend/cudnn.hpp>).
// Scratch memory is a tape slot, so a steady-state step allocates nothing.
#pragma once

#include <string>

#include "siam/autodiff/ops.hpp"
#include "siam/autodiff/structure.hpp"
#include "siam/autodiff/tape.hpp"
#include "siam/backend/conv_dispatch.hpp"
#include "siam/detail/conv_geometry.hpp"

namespace siam {

namespace detail {

/// Checks conv2d's operands and returns its geometry; shape_error names every shape. An
/// input of rank 5 is channel-blocked ([N x C/K x H x W x K]); out_block > 0 asks for the
/// output in blocks of out_block channels.
inline ConvGeometry conv_geometry(const char* op, const Shape& x, const Shape& w, const Shape* b,
                                  index_t stride, index_t padding, index_t out_block = 0) {
  auto fail = [&](const std::string& why) {
    throw shape_error(std::string(op) + ": " + why + " (input " + x.str() + ", weight " + w.str() +
                      (b ? ", bias " + b->str() : std::string()) + ", stride " +
                      std::to_string(stride) + ", padding " + std::to_string(padding) +
                      (out_block ? ", output blocks of " + std::to_string(out_block) : "") + ")");
  };
  if (x.rank() != 4 && x.rank() != 5)
    fail("the input must be [N x C x H x W] or channel-blocked [N x C/K x H x W x K]");
  if (w.rank() != 4) fail("the weight must be [O x C x KH x KW]");
  if (stride < 1) fail("the stride must be at least 1");
  if (padding < 0) fail("the padding must not be negative");
  const index_t xblock = x.rank() == 5 ? x[4] : 0, c = xblock ? x[1] * xblock : x[1];
  if (x.rank() == 5 && xblock < 1) fail("a channel block must hold at least 1 channel");
  if (w[1] != c)
    fail("the weight expects " + std::to_string(w[1]) + " input channels, the input has " +
         std::to_string(c));
  if (b && (b->rank() != 1 || (*b)[0] != w[0]))
    fail("the bias must be [" + std::to_string(w[0]) + "]");
  if (w[2] < 1 || w[3] < 1) fail("the kernel must be at least 1 x 1");
  if (out_block < 0 || (out_block > 0 && w[0] % out_block != 0))
    fail("the output channels must be a whole number of blocks");
  ConvGeometry g{x[0], c, x[2], x[3], w[0], w[2], w[3], stride, padding, 0, 0, xblock, out_block};
  g.oh = window_out(g.h, g.kh, stride, padding);
  g.ow = window_out(g.w, g.kw, stride, padding);
  if (g.oh < 0 || g.ow < 0)
    fail("the kernel " + std::to_string(g.kh) + " x " + std::to_string(g.kw) +
         " is larger than the padded input " + std::to_string(g.h + 2 * padding) + " x " +
         std::to_string(g.w + 2 * padding));
  return g;
}

inline ConvGeometry pool_geometry(const Shape& x, index_t kernel, index_t stride) {
  auto fail = [&](const std::string& why) {
    throw shape_error("max_pool2d: " + why + " (input " + x.str() + ", kernel " +
                      std::to_string(kernel) + ", stride " + std::to_string(stride) + ")");
  };
  if (x.rank() != 4) fail("the input must be [N x C x H x W]");
  if (kernel < 1 || stride < 1) fail("kernel and stride must be at least 1");
  if (kernel > x[2] || kernel > x[3]) fail("the window is larger than the input");
  if (x[2] * x[3] > (index_t(1) << 24))
    fail("a plane of more than 2^24 values (arg-max positions are stored as scalars)");
  ConvGeometry g{x[0], x[1], x[2], x[3], x[1], kernel, kernel, stride, 0, 0, 0, 0, 0};
  g.oh = window_out(g.h, kernel, stride, 0);
  g.ow = window_out(g.w, kernel, stride, 0);
  return g;
}

template <class T, class B, bool HasBias>
void conv2d_backward(Tape<T, B>& t, const typename Tape<T, B>::Node& n) {
  const Shape sb = t.shape(n.in[2]);
  const Shape sy = t.shape(n.out);
  const ConvGeometry g = conv_geometry("conv2d", t.shape(n.in[0]), t.shape(n.in[1]),
                                       HasBias ? &sb : nullptr, static_cast<index_t>(n.s[0]),
                                       static_cast<index_t>(n.s[1]), sy.rank() == 5 ? sy[4] : 0);
  bool ax = false, aw = false, ab = false;
  T* dx = t.requires_grad(n.in[0]) ? t.grad_for_write(n.in[0], ax).data() : nullptr;
  T* dw = t.requires_grad(n.in[1]) ? t.grad_for_write(n.in[1], aw).data() : nullptr;
  T* db = HasBias && t.requires_grad(n.in[2]) ? t.grad_for_write(n.in[2], ab).data() : nullptr;
  View<T, B> work = t.value(n.in[3]);
  // The forward chose its layout and workspace for the engine of that time; another engine
  // now could neither read the blocked tensors nor fit its scratch in the workspace.
  const bool layout_ok = !(g.xblock || g.yblock) || ConvDispatch<T, B>::blocked();
  const index_t needed = layout_ok ? ConvDispatch<T, B>::workspace(g) : 0;
  if (!layout_ok || work.size() < needed)
    throw value_error("conv2d: the engine changed between forward and backward (blocks of " +
                      std::to_string(g.xblock) + " in and " + std::to_string(g.yblock) +
                      " out, a workspace of " + std::to_string(work.size()) + " values for " +
                      std::to_string(needed) + ")");
  ConvDispatch<T, B>::backward(g, t.value(n.in[0]).data(), t.value(n.in[1]).data(),
                               t.out_grad(n).data(), dx, ax, dw, aw, db, ab, work.data());
}

template <class T, class B>
Var<T, B> conv2d_impl(Var<T, B> x, Var<T, B> w, const Var<T, B>* b, index_t stride, index_t padding,
                      index_t out_block) {
  require_same_tape("conv2d", x, w);
  if (b) require_same_tape("conv2d", x, *b);
  auto& t = x.tape();
  const Shape sb = b ? b->shape() : Shape{};
  const ConvGeometry g =
      conv_geometry("conv2d", x.shape(), w.shape(), b ? &sb : nullptr, stride, padding, out_block);
  if ((g.xblock || g.yblock) && !ConvDispatch<T, B>::blocked())
    throw value_error(std::string("conv2d: channel-blocked tensors need the oneDNN engine (") +
                      (B::is_host ? "float, set_conv_engine(ConvEngine::onednn)" : B::name) +
                      "); input " + x.shape().str() + ", output blocks of " +
                      std::to_string(out_block));
  const index_t k = ConvDispatch<T, B>::block();
  if ((g.xblock && g.xblock != k) || (g.yblock && g.yblock != k))
    throw value_error("conv2d: channel blocks of " + std::to_string(k) +
                      " on this engine and CPU (conv_block()); input " + x.shape().str() +
                      ", output blocks of " + std::to_string(out_block));
  const bool rg = x.requires_grad() || w.requires_grad() || (b && b->requires_grad());
  Var<T, B> y = t.make(g.out_shape(), rg);
  Var<T, B> work = t.make(Shape{ConvDispatch<T, B>::workspace(g)}, false);
  ConvDispatch<T, B>::forward(g, x.value().data(), w.value().data(),
                              b ? b->value().data() : nullptr, y.value().data(),
                              work.value().data());
  if (b)
    t.record(&conv2d_backward<T, B, true>, y, {x.id(), w.id(), b->id(), work.id()}, T(stride),
             T(padding));
  else
    t.record(&conv2d_backward<T, B, false>, y, {x.id(), w.id(), x.id(), work.id()}, T(stride),
             T(padding));
  return y;
}

}  // namespace detail

// ---- conv2d: y[n, o] = b[o] + sum_c w[o, c] (*) x[n, c]  (cross-correlation, NCHW).
// x [N x C x H x W], w [O x C x KH x KW], b [O] -> y [N x O x OH x OW],
// OH = (H + 2 padding - KH) / stride + 1 (likewise OW), zeros outside the input.
// Writing y[n,o,p,q] = b[o] + sum_{c,i,j} w[o,c,i,j] x[n, c, p s - pad + i, q s - pad + j]:
//   dx[n,c,u,v] += sum over (o,p,q,i,j) with p s - pad + i = u, q s - pad + j = v of
//                  w[o,c,i,j] dy[n,o,p,q];
//   dw[o,c,i,j] += sum_{n,p,q} x[n, c, p s - pad + i, q s - pad + j] dy[n,o,p,q];
//   db[o]       += sum_{n,p,q} dy[n,o,p,q].
// Throws shape_error naming the shapes for a bad rank, a channel mismatch, a bias of the
// wrong length, stride < 1, padding < 0, or a kernel larger than the padded input.
//
// Channel-blocked tensors (autodiff/layout.hpp): x may be [N x C/K x H x W x K], and
// out_block = K > 0 writes y as [N x O/K x OH x OW x K] (O a multiple of K). Only the oneDNN
// engine reads and writes them (its own layouts, no copies); elsewhere value_error.
// conv_block() says which K it works in.
template <class T, class B>
Var<T, B> conv2d(Var<T, B> x, Var<T, B> w, Var<T, B> b, index_t stride = 1, index_t padding = 0,
                 index_t out_block = 0) {
  return detail::conv2d_impl(x, w, &b, stride, padding, out_block);
}
/// conv2d without a bias.
template <class T, class B>
Var<T, B> conv2d(Var<T, B> x, Var<T, B> w, index_t stride = 1, index_t padding = 0,
                 index_t out_block = 0) {
  return detail::conv2d_impl(x, w, static_cast<const Var<T, B>*>(nullptr), stride, padding,
                             out_block);
}

/// The channel block conv2d reads and writes without copies for T on B: 16 or 8 with the
/// oneDNN engine (what its kernels use on this CPU), 0 where channel-blocked tensors are not
/// supported (im2col, double, a device).
template <class T, class B>
index_t conv_block() {
  return detail::ConvDispatch<T, B>::blocked() ? detail::ConvDispatch<T, B>::block() : 0;
}

// ---- max_pool2d: y[n,c,p,q] = max over the kernel x kernel window at (p stride, q stride)
// of x[n,c] (no padding; OH = (H - kernel) / stride + 1). The window's arg-max is kept in a
// tape slot; ties go to the FIRST position in row-major order within the window.
//   dx[n,c,u,v] += sum over outputs (p,q) whose arg-max is (u,v) of dy[n,c,p,q]
// (other positions receive 0). Throws shape_error for a bad rank or a window larger than
// the input.
template <class T, class B>
Var<T, B> max_pool2d(Var<T, B> x, index_t kernel, index_t stride) {
  auto& tape = x.tape();
  const detail::ConvGeometry geo = detail::pool_geometry(x.shape(), kernel, stride);
  Var<T, B> y = tape.make(geo.out_shape(), x.requires_grad());
  Var<T, B> idx = tape.make(geo.out_shape(), false);
  detail::ConvDispatch<T, B>::pool_forward(geo, x.value().data(), y.value().data(),
                                           idx.value().data());
  tape.record(
      +[](Tape<T, B>& t, const typename Tape<T, B>::Node& n) {
        if (!t.requires_grad(n.in[0])) return;
        const detail::ConvGeometry g = detail::pool_geometry(
            t.shape(n.in[0]), static_cast<index_t>(n.s[0]), static_cast<index_t>(n.s[1]));
        bool acc;
        View<T, B> dx = t.grad_for_write(n.in[0], acc);
        detail::ConvDispatch<T, B>::pool_backward(g, t.out_grad(n).data(), t.value(n.in[1]).data(),
                                                  dx.data(), acc);
      },
      y, {x.id(), idx.id()}, T(kernel), T(stride));
  return y;
}

// ---- flatten: [N x d1 x ...] -> [N x d1*...], a reshape (no copy).  dx += dy.
template <class T, class B>
Var<T, B> flatten(Var<T, B> x) {
  const Shape s = x.shape();
  if (s.rank() < 2) throw shape_error("flatten: the input " + s.str() + " has no batch axis");
  return reshape(x, Shape{s.rows(), s.cols()});
}

}  // namespace siam

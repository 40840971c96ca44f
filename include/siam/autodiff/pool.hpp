// Average pooling on tape variables (NCHW), forward and backward side by side:
// global_avg_pool2d (each plane to its mean, what a ResNet ends with) and avg_pool2d
// (kernel x kernel windows, no padding). Both are written with expressions or with conv2d,
// so they run on every backend conv2d runs on.
#pragma once

#include <string>

#include "siam/autodiff/conv.hpp"
#include "siam/autodiff/structure.hpp"
#include "siam/autodiff/tape.hpp"

namespace siam {

// ---- global_avg_pool2d: x [N x C x H x W] (or [N x C x L]) -> y [N x C],
//   y[n, c] = sum_{i,j} x[n, c, i, j] / (H W);   dx[n, c, i, j] += dy[n, c] / (H W).
// One pass each way over the data (seen as [N*C x HW] planes). Throws shape_error for a
// rank below 3 or planes of no element.
template <class T, class B>
Var<T, B> global_avg_pool2d(Var<T, B> x) {
  const Shape s = x.shape();
  if (s.rank() < 3)
    throw shape_error("global_avg_pool2d: the input must be [N x C x H x W], got " + s.str());
  index_t hw = 1;
  for (int d = 2; d < s.rank(); ++d)
    hw *= s[d];
  if (hw == 0) throw shape_error("global_avg_pool2d: empty planes in " + s.str());
  auto& t = x.tape();
  const index_t planes = s[0] * s[1];
  Var<T, B> y = t.make(Shape{s[0], s[1]}, x.requires_grad());
  const T inv = T(1) / static_cast<T>(hw);
  View<T, B>(y.value().data(), Shape{planes, 1}) =
      sum_cols(View<T, B>(x.value().data(), Shape{planes, hw}) * inv);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        if (!tp.requires_grad(n.in[0])) return;
        const Shape xs = tp.shape(n.in[0]);
        const index_t p = xs[0] * xs[1], h = xs.size() / (p > 0 ? p : 1);
        bool acc = false;
        View<T, B> dx(tp.grad_for_write(n.in[0], acc).data(), Shape{p, h});
        auto e = broadcast_cols(View<T, B>(tp.out_grad(n).data(), Shape{p, 1}), h) * n.s[0];
        if (acc)
          dx += e;
        else
          dx = e;
      },
      y, {x.id()}, inv);
  return y;
}

// ---- avg_pool2d: y[n,c,p,q] = mean of the kernel x kernel window of x[n,c] at
// (p stride, q stride) (no padding; OH = (H - kernel) / stride + 1, likewise OW);
//   dx[n,c,u,v] += sum over windows (p,q) containing (u,v) of dy[n,c,p,q] / kernel^2.
// Runs as conv2d of the N*C planes with a constant kernel x kernel filter of 1 / kernel^2
// (its backward is conv2d's). Throws shape_error for a bad rank, kernel or stride below 1,
// or a window larger than the input.
template <class T, class B>
Var<T, B> avg_pool2d(Var<T, B> x, index_t kernel, index_t stride) {
  const Shape s = x.shape();
  auto fail = [&](const std::string& why) {
    throw shape_error("avg_pool2d: " + why + " (input " + s.str() + ", kernel " +
                      std::to_string(kernel) + ", stride " + std::to_string(stride) + ")");
  };
  if (s.rank() != 4) fail("the input must be [N x C x H x W]");
  if (kernel < 1 || stride < 1) fail("kernel and stride must be at least 1");
  if (kernel > s[2] || kernel > s[3]) fail("the window is larger than the input");
  auto& t = x.tape();
  Var<T, B> w = t.make(Shape{1, 1, kernel, kernel}, false);
  w.value() = Constant<T, B>{w.shape(), T(1) / static_cast<T>(kernel * kernel)};
  Var<T, B> planes = reshape(x, Shape{s[0] * s[1], 1, s[2], s[3]});
  Var<T, B> y = conv2d(planes, w, stride, 0);
  const Shape ys = y.shape();
  return reshape(y, Shape{s[0], s[1], ys[2], ys[3]});
}

}  // namespace siam

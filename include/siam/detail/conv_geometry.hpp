// The geometry of a 2-D convolution or pooling window over NCHW tensors, shared by the
// autodiff ops and every engine (host im2col, oneDNN, cuDNN), so that each computes
// output sizes and workspace the same way.
#pragma once

#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam::detail {

/// x [n x c x h x w] -> y [n x o x oh x ow] with a kh x kw window moved by `stride`
/// over the input padded by `pad` zeros on every side (pooling: o == c, pad == 0).
struct ConvGeometry {
  index_t n = 0, c = 0, h = 0, w = 0;  // input
  index_t o = 0, kh = 0, kw = 0;       // filters (o = c for pooling)
  index_t stride = 1, pad = 0;
  index_t oh = 0, ow = 0;  // output
  // Channel blocks of the input and output: 0 for NCHW, K for the blocked layout
  // [n x c/K x h x w x K] (backend/blocked_host.hpp), which only the oneDNN engine reads.
  index_t xblock = 0, yblock = 0;

  index_t in_size() const { return n * c * h * w; }
  index_t out_size() const { return n * o * oh * ow; }
  index_t weight_size() const { return o * c * kh * kw; }
  index_t patch() const { return c * kh * kw; }  // values under one window
  index_t pixels() const { return oh * ow; }     // output positions per image and channel
  Shape out_shape() const {
    return yblock ? Shape{n, o / yblock, oh, ow, yblock} : Shape{n, o, oh, ow};
  }
  bool operator==(const ConvGeometry&) const = default;
};

/// Output extent of a window of size k moved by s over an input of size x padded by p on
/// both sides; -1 when the window does not fit.
inline index_t window_out(index_t x, index_t k, index_t s, index_t p) {
  return k > x + 2 * p ? -1 : (x + 2 * p - k) / s + 1;
}

/// The maximum of plane xp's g.kh x g.kw window at row y0, column x0, and in `at_max` its
/// flat position (iy * g.w + ix). Ties go to the first position in row-major order (a later
/// value must be strictly greater to win); a NaN in the window is the result, as in PyTorch
/// (the first NaN: nothing compares greater than it). Host and device pooling share it.
template <class T>
SIAM_HD inline T window_max(const ConvGeometry& g, const T* xp, index_t y0, index_t x0,
                            index_t& at_max) {
  at_max = y0 * g.w + x0;
  T v = xp[at_max];
  for (index_t ki = 0; ki < g.kh; ++ki)
    for (index_t kj = 0; kj < g.kw; ++kj) {
      const index_t at = (y0 + ki) * g.w + x0 + kj;
      if (xp[at] > v || xp[at] != xp[at]) {  // NaN wins, and then stays
        v = xp[at];
        at_max = at;
      }
    }
  return v;
}

}  // namespace siam::detail

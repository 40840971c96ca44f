// The host engine of conv2d and max_pool2d (autodiff/conv.hpp), and the switch that lets an
// optional engine (oneDNN, backend/conv_dnnl.hpp) take over the float convolution.
//
// Convolution as im2row + GEMM through the backend's own GEMM (B::gemm): the windows of a
// group of images become the rows of a matrix R [m*P x C*KH*KW] (P = output pixels per
// image), so one GEMM per group computes every output channel:
//   forward   Y^T = R W^T                      ([m*P x O], then transposed to NCHW + bias)
//   backward  dW += dY^T R,  dR = dY W,  dx += row2im(dR),  db += sum of dY
// Groups hold about 512 rows, so R stays in the L2 cache and the GEMMs are large enough to
// run near the machine's FMA peak. Images are split into at most 8 chunks (fixed by the batch
// size alone); each chunk keeps its own weight- and bias-gradient partials, added in chunk
// order afterwards, so results do not depend on the thread count. All scratch memory is the
// caller's workspace (a tape slot): a steady-state step allocates nothing.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "siam/detail/config.hpp"
#include "siam/detail/conv_geometry.hpp"
#include "siam/error.hpp"

namespace siam {

/// Which engine runs float convolutions on the CPU. `im2col` is always there; `onednn`
/// exists when <siam/backend/conv_dnnl.hpp> is included (CMake option SIAM_DNNL), and is
/// then the default (it is the faster one on the LeNet shapes: see docs/conv.md).
enum class ConvEngine { im2col, onednn };

namespace detail {

/// A float convolution engine: workspace need (in floats) and the two passes. Null
/// gradient pointers are skipped; acc_* says whether to add to (true) or overwrite them.
struct HostConvFns {
  const char* name;
  index_t (*workspace)(const ConvGeometry& g);
  void (*forward)(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                  float* work);
  void (*backward)(const ConvGeometry& g, const float* x, const float* w, const float* dy,
                   float* dx, bool acc_dx, float* dw, bool acc_dw, float* db, bool acc_db,
                   float* work);
};
inline const HostConvFns*& onednn_conv_fns() {
  static const HostConvFns* fns = nullptr;
  return fns;
}
inline ConvEngine& active_conv_engine() {
  static ConvEngine e = ConvEngine::im2col;
  return e;
}

// body(0..n-1), over OpenMP threads when `parallel` and n > 1.
template <class F>
void parallel_for(index_t n, [[maybe_unused]] bool parallel, const F& body) {
#if defined(_OPENMP)
  if (parallel && n > 1) {
    SIAM_OMP(parallel for schedule(static))
    for (index_t i = 0; i < n; ++i)
      body(i);
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i)
    body(i);
}

}  // namespace detail

/// Selects the CPU float convolution engine. Throws value_error for `onednn` when this
/// program was built without <siam/backend/conv_dnnl.hpp>. Not thread-safe: choose before
/// training, not between a forward and its backward.
inline void set_conv_engine(ConvEngine e) {
  if (e == ConvEngine::onednn && !detail::onednn_conv_fns())
    throw value_error(
        "set_conv_engine: oneDNN is not built in (include <siam/backend/conv_dnnl.hpp> and "
        "configure with -DSIAM_DNNL=ON)");
  detail::active_conv_engine() = e;
}
inline ConvEngine conv_engine() {
  return detail::active_conv_engine();
}
inline const char* conv_engine_name() {
  return conv_engine() == ConvEngine::onednn ? "onednn" : "im2col";
}

namespace detail {

/// im2row + GEMM on a host backend B (any scalar type B::gemm supports).
template <class T, class B>
struct Im2Row {
  static constexpr index_t max_chunks = 8, group_rows = 512;

  struct Plan {
    index_t chunks, group;   // image chunks; images per GEMM group
    index_t rows;            // group * pixels
    index_t per_chunk;       // workspace elements per chunk
  };
  static Plan plan(const ConvGeometry& g) {
    Plan p;
    p.chunks = std::min(g.n, max_chunks);
    p.group = std::max<index_t>(1, group_rows / std::max<index_t>(1, g.pixels()));
    p.rows = p.group * g.pixels();
    p.per_chunk = p.rows * g.patch() + p.rows * g.o + g.o * g.patch() + g.o;
    return p;
  }
  static index_t workspace(const ConvGeometry& g) {
    const Plan p = plan(g);
    return p.chunks * p.per_chunk;
  }
  static index_t chunk_begin(const ConvGeometry& g, const Plan& p, index_t k) {
    return k * g.n / p.chunks;
  }

  // R[(i, oh, ow), (c, ki, kj)] = x[i0 + i, c, oh*s - pad + ki, ow*s - pad + kj] (0 outside).
  static void im2row(const ConvGeometry& g, const T* x, index_t i0, index_t m, T* r) {
    const index_t K = g.patch(), hw = g.h * g.w;
    for (index_t i = 0; i < m; ++i) {
      const T* xi = x + (i0 + i) * g.c * hw;
      for (index_t oy = 0; oy < g.oh; ++oy)
        for (index_t ox = 0; ox < g.ow; ++ox) {
          T* row = r + (i * g.pixels() + oy * g.ow + ox) * K;
          const index_t y0 = oy * g.stride - g.pad, x0 = ox * g.stride - g.pad;
          const bool inside = y0 >= 0 && x0 >= 0 && y0 + g.kh <= g.h && x0 + g.kw <= g.w;
          for (index_t c = 0; c < g.c; ++c)
            for (index_t ki = 0; ki < g.kh; ++ki) {
              T* dst = row + (c * g.kh + ki) * g.kw;
              const index_t iy = y0 + ki;
              const T* src = xi + c * hw + iy * g.w + x0;
              if (inside) {
                for (index_t kj = 0; kj < g.kw; ++kj)
                  dst[kj] = src[kj];
              } else {
                for (index_t kj = 0; kj < g.kw; ++kj) {
                  const index_t ix = x0 + kj;
                  dst[kj] = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w ? src[kj] : T(0);
                }
              }
            }
        }
    }
  }
  // dx[i0 + i, c, iy, ix] += dR[(i, oh, ow), (c, ki, kj)] over the windows that read it.
  static void row2im(const ConvGeometry& g, const T* dr, index_t i0, index_t m, T* dx) {
    const index_t K = g.patch(), hw = g.h * g.w;
    for (index_t i = 0; i < m; ++i) {
      T* xi = dx + (i0 + i) * g.c * hw;
      for (index_t oy = 0; oy < g.oh; ++oy)
        for (index_t ox = 0; ox < g.ow; ++ox) {
          const T* row = dr + (i * g.pixels() + oy * g.ow + ox) * K;
          const index_t y0 = oy * g.stride - g.pad, x0 = ox * g.stride - g.pad;
          for (index_t c = 0; c < g.c; ++c)
            for (index_t ki = 0; ki < g.kh; ++ki) {
              const index_t iy = y0 + ki;
              if (iy < 0 || iy >= g.h) continue;
              const T* src = row + (c * g.kh + ki) * g.kw;
              T* dst = xi + c * hw + iy * g.w;
              for (index_t kj = 0; kj < g.kw; ++kj) {
                const index_t ix = x0 + kj;
                if (ix >= 0 && ix < g.w) dst[ix] += src[kj];
              }
            }
        }
    }
  }

  static void forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y, T* work) {
    if (g.out_size() == 0) return;
    const Plan p = plan(g);
    const index_t K = g.patch(), P = g.pixels(), O = g.o;
    parallel_for(p.chunks, true, [&](index_t k) {
      T* r = work + k * p.per_chunk;
      T* t = r + p.rows * K;
      const index_t e = chunk_begin(g, p, k + 1);
      for (index_t i0 = chunk_begin(g, p, k); i0 < e; i0 += p.group) {
        const index_t m = std::min(p.group, e - i0);
        im2row(g, x, i0, m, r);
        B::gemm(false, true, m * P, O, K, T(1), r, K, w, K, T(0), t, O);  // T = R W^T
        for (index_t i = 0; i < m; ++i)
          for (index_t o = 0; o < O; ++o) {
            T* yo = y + ((i0 + i) * O + o) * P;
            const T* to = t + i * P * O + o;
            const T bo = b ? b[o] : T(0);
            for (index_t q = 0; q < P; ++q)
              yo[q] = to[q * O] + bo;
          }
      }
    });
  }

  static void backward(const ConvGeometry& g, const T* x, const T* w, const T* dy, T* dx,
                       bool acc_dx, T* dw, bool acc_dw, T* db, bool acc_db, T* work) {
    const Plan p = plan(g);
    const index_t K = g.patch(), P = g.pixels(), O = g.o;
    if (dx && !acc_dx) std::fill(dx, dx + g.in_size(), T(0));
    parallel_for(p.chunks, g.out_size() > 0, [&](index_t k) {
      T* r = work + k * p.per_chunk;
      T* t = r + p.rows * K;
      T* dwp = t + p.rows * O;
      T* dbp = dwp + O * K;
      std::fill(dbp, dbp + O, T(0));
      bool first = true;
      const index_t e = chunk_begin(g, p, k + 1);
      for (index_t i0 = chunk_begin(g, p, k); i0 < e; i0 += p.group) {
        const index_t m = std::min(p.group, e - i0);
        for (index_t i = 0; i < m; ++i)  // t = dY^T for these images; db partial
          for (index_t o = 0; o < O; ++o) {
            const T* d = dy + ((i0 + i) * O + o) * P;
            T* to = t + i * P * O + o;
            T s = 0;
            for (index_t q = 0; q < P; ++q) {
              to[q * O] = d[q];
              s += d[q];
            }
            dbp[o] += s;
          }
        if (dw) {
          im2row(g, x, i0, m, r);
          B::gemm(true, false, O, K, m * P, T(1), t, O, r, K, first ? T(0) : T(1), dwp, K);
        }
        if (dx) {
          B::gemm(false, false, m * P, K, O, T(1), t, O, w, K, T(0), r, K);  // dR = dY W
          row2im(g, r, i0, m, dx);
        }
        first = false;
      }
      if (first && dw) std::fill(dwp, dwp + O * K, T(0));  // an empty chunk
    });
    // Partials in chunk order (an empty batch has no chunk: the gradient is zero).
    auto total = [&](T* out, bool acc, index_t len, index_t offset) {
      if (!out) return;
      if (!acc) std::fill(out, out + len, T(0));
      for (index_t k = 0; k < p.chunks; ++k) {
        const T* part = work + k * p.per_chunk + offset;
        for (index_t j = 0; j < len; ++j)
          out[j] += part[j];
      }
    };
    total(dw, acc_dw, O * K, p.rows * K + p.rows * O);
    total(db, acc_db, O, p.rows * K + p.rows * O + O * K);
  }
};

/// Max pooling on the host. idx holds, per output, the flat position (iy * w + ix) of the
/// window's maximum in its input plane; ties go to the first position in row-major order
/// (a later value must be strictly greater to win).
template <class T>
struct HostPool {
  static void forward(const ConvGeometry& g, const T* x, T* y, T* idx) {
    const index_t planes = g.n * g.c, hw = g.h * g.w, P = g.pixels();
    parallel_for(planes, g.in_size() >= (1 << 15), [&](index_t pl) {
      const T* xp = x + pl * hw;
      T* yp = y + pl * P;
      T* ip = idx + pl * P;
      for (index_t oy = 0; oy < g.oh; ++oy)
        for (index_t ox = 0; ox < g.ow; ++ox) {
          const index_t y0 = oy * g.stride, x0 = ox * g.stride;
          index_t best = y0 * g.w + x0;
          T v = xp[best];
          for (index_t ki = 0; ki < g.kh; ++ki)
            for (index_t kj = 0; kj < g.kw; ++kj) {
              const index_t at = (y0 + ki) * g.w + x0 + kj;
              if (xp[at] > v) {
                v = xp[at];
                best = at;
              }
            }
          yp[oy * g.ow + ox] = v;
          ip[oy * g.ow + ox] = static_cast<T>(best);
        }
    });
  }
  // dx[plane, idx] += dy: each plane on its own, outputs in order (deterministic).
  static void backward(const ConvGeometry& g, const T* dy, const T* idx, T* dx, bool acc) {
    const index_t planes = g.n * g.c, hw = g.h * g.w, P = g.pixels();
    parallel_for(planes, g.in_size() >= (1 << 15), [&](index_t pl) {
      T* dp = dx + pl * hw;
      if (!acc) std::fill(dp, dp + hw, T(0));
      const T* d = dy + pl * P;
      const T* ip = idx + pl * P;
      for (index_t q = 0; q < P; ++q)
        dp[static_cast<index_t>(ip[q])] += d[q];
    });
  }
};

}  // namespace detail
}  // namespace siam

// The host engines of conv2d and max_pool2d (autodiff/conv.hpp): im2col + GEMM and max
// pooling. backend/conv_dispatch.hpp chooses between them, oneDNN (backend/conv_dnnl.hpp) and
// a device engine.
//
// Convolution as im2col + GEMM through the backend's own GEMM (B::gemm): the windows of a
// group of m images become the columns of a matrix X [C*KH*KW x m*P] (P = output pixels per
// image; for stride 1 each row of X is built from contiguous runs of the input), so one GEMM
// per group computes every output channel of every image:
//   forward   Y = W X                    ([O x m*P], copied to NCHW with the bias added;
//                                         for m = 1 written in place, the bias added there)
//   backward  dW += dY X^T,  dX = W^T dY,  dx += col2im(dX),  db += sum of dY
//                                        (dY copied to [O x m*P] for m > 1, read in place for 1)
// Groups hold about 128 columns (at least one image), so X stays in the L2 cache; 256 and
// 512 were measured slower on LeNet's shapes (docs/conv.md). Images are split into at most 8 chunks
// (fixed by the batch size alone); each chunk keeps its own weight- and bias-gradient partials,
// added in chunk order afterwards, so results do not depend on the thread count. All scratch memory
// is the caller's workspace (a tape slot): a steady-state step allocates nothing.
#pragma once

#include <algorithm>
#include <cstring>

#include "siam/backend/host_threads.hpp"
#include "siam/detail/config.hpp"
#include "siam/detail/conv_geometry.hpp"

namespace siam {

namespace detail {

// dst[0, n) = src[0, n) (or += with Add), in blocks of 8 that the compiler turns into single
// vector moves: the runs of im2col and col2im are output rows, short (8 and 24 floats
// for LeNet), where a general loop or a library call costs more than the copy.
template <bool Add, class T>
inline void short_run(T* dst, const T* src, index_t n) {
  index_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (index_t u = 0; u < 8; ++u) {
      if constexpr (Add)
        dst[j + u] += src[j + u];
      else
        dst[j + u] = src[j + u];
    }
  for (; j < n; ++j) {
    if constexpr (Add)
      dst[j] += src[j];
    else
      dst[j] = src[j];
  }
}

/// im2col + GEMM on a host backend B (any scalar type B::gemm supports).
template <class T, class B>
struct Im2Col {
  static constexpr index_t max_chunks = 8, group_cols = 128;

  struct Plan {
    index_t chunks, group;  // image chunks; images per GEMM group
    index_t cols;           // group * pixels: the column count of a group's matrices
    index_t per_chunk;      // workspace elements per chunk
  };
  static Plan plan(const ConvGeometry& g) {
    Plan p;
    p.chunks = std::min(g.n, max_chunks);
    p.group = std::max<index_t>(1, group_cols / std::max<index_t>(1, g.pixels()));
    p.cols = p.group * g.pixels();
    p.per_chunk = p.cols * g.patch() + p.cols * g.o + g.o * g.patch() + g.o;
    return p;
  }
  static index_t workspace(const ConvGeometry& g) {
    const Plan p = plan(g);
    return p.chunks * p.per_chunk;
  }
  static index_t chunk_begin(const ConvGeometry& g, const Plan& p, index_t k) {
    return k * g.n / p.chunks;
  }

  // col[(c, ki, kj), i P + oy OW + ox] = x[i0 + i, c, oy s - pad + ki, ox s - pad + kj]
  // (0 outside), row stride ld. For stride 1 each output row is one contiguous run.
  static void im2col(const ConvGeometry& g, const T* x, index_t i0, index_t m, T* col, index_t ld) {
    const index_t hw = g.h * g.w, P = g.pixels();
    if (g.stride == 1 && g.pad == 0) {  // every window inside: no zeros, runs of a whole row
      const index_t ow = g.ow, kw = g.kw;
      for (index_t i = 0; i < m; ++i)
        for (index_t c = 0; c < g.c; ++c) {
          const T* xc = x + ((i0 + i) * g.c + c) * hw;
          for (index_t ki = 0; ki < g.kh; ++ki) {
            T* rows = col + (c * g.kh + ki) * kw * ld + i * P;  // row (c, ki, 0)
            for (index_t oy = 0; oy < g.oh; ++oy) {
              const T* src = xc + (oy + ki) * g.w;  // read once, by all kw rows
              T* dst = rows + oy * ow;
              for (index_t kj = 0; kj < kw; ++kj)
                short_run<false>(dst + kj * ld, src + kj, ow);
            }
          }
        }
      return;
    }
    for (index_t c = 0; c < g.c; ++c)
      for (index_t ki = 0; ki < g.kh; ++ki)
        for (index_t kj = 0; kj < g.kw; ++kj) {
          T* row = col + ((c * g.kh + ki) * g.kw + kj) * ld;
          // Output columns whose input column lies inside: [lo, hi).
          index_t lo = 0, hi = g.ow;
          while (lo < g.ow && lo * g.stride - g.pad + kj < 0)
            ++lo;
          while (hi > lo && (hi - 1) * g.stride - g.pad + kj >= g.w)
            --hi;
          for (index_t i = 0; i < m; ++i) {
            const T* xc = x + ((i0 + i) * g.c + c) * hw;
            for (index_t oy = 0; oy < g.oh; ++oy) {
              T* dst = row + i * P + oy * g.ow;
              const index_t iy = oy * g.stride - g.pad + ki;
              if (iy < 0 || iy >= g.h) {
                std::fill(dst, dst + g.ow, T(0));
                continue;
              }
              const T* src = xc + iy * g.w - g.pad + kj;
              if (lo > 0) std::fill(dst, dst + lo, T(0));
              if (g.stride == 1) {
                short_run<false>(dst + lo, src + lo, hi - lo);
              } else {
                for (index_t ox = lo; ox < hi; ++ox)
                  dst[ox] = src[ox * g.stride];
              }
              if (hi < g.ow) std::fill(dst + hi, dst + g.ow, T(0));
            }
          }
        }
  }
  // dx[i0 + i, c, iy, ix] += dcol[(c, ki, kj), i P + oy OW + ox] over the windows reading it.
  static void col2im(const ConvGeometry& g, const T* col, index_t ld, index_t i0, index_t m,
                     T* dx) {
    const index_t hw = g.h * g.w, P = g.pixels();
    for (index_t i = 0; i < m; ++i)
      for (index_t c = 0; c < g.c; ++c) {
        T* xc = dx + ((i0 + i) * g.c + c) * hw;
        for (index_t ki = 0; ki < g.kh; ++ki)
          for (index_t kj = 0; kj < g.kw; ++kj) {
            const T* row = col + ((c * g.kh + ki) * g.kw + kj) * ld + i * P;
            index_t lo = 0, hi = g.ow;
            while (lo < g.ow && lo * g.stride - g.pad + kj < 0)
              ++lo;
            while (hi > lo && (hi - 1) * g.stride - g.pad + kj >= g.w)
              --hi;
            for (index_t oy = 0; oy < g.oh; ++oy) {
              const index_t iy = oy * g.stride - g.pad + ki;
              if (iy < 0 || iy >= g.h) continue;
              T* dst = xc + iy * g.w - g.pad + kj;
              const T* src = row + oy * g.ow;
              if (g.stride == 1) {
                short_run<true>(dst + lo, src + lo, hi - lo);
              } else {
                for (index_t ox = lo; ox < hi; ++ox)
                  dst[ox * g.stride] += src[ox];
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
      T* col = work + k * p.per_chunk;
      T* t = col + p.cols * K;
      const index_t e = chunk_begin(g, p, k + 1);
      for (index_t i0 = chunk_begin(g, p, k); i0 < e; i0 += p.group) {
        const index_t m = std::min(p.group, e - i0), n = m * P;
        im2col(g, x, i0, m, col, n);
        if (m == 1) {  // one image: [O x P] is its NCHW block, the GEMM writes it in place
          T* yi = y + i0 * O * P;
          B::gemm(false, false, O, n, K, T(1), w, K, col, n, T(0), yi, n);
          if (b)
            for (index_t o = 0; o < O; ++o) {
              T* yo = yi + o * P;
              const T bo = b[o];
              SIAM_IVDEP for (index_t q = 0; q < P; ++q) yo[q] += bo;
            }
          continue;
        }
        B::gemm(false, false, O, n, K, T(1), w, K, col, n, T(0), t, n);  // t = W col
        for (index_t i = 0; i < m; ++i)  // t's image blocks to NCHW, adding the bias
          for (index_t o = 0; o < O; ++o) {
            T* yo = y + ((i0 + i) * O + o) * P;
            const T* to = t + o * n + i * P;
            const T bo = b ? b[o] : T(0);
            SIAM_IVDEP for (index_t q = 0; q < P; ++q) yo[q] = to[q] + bo;
          }
      }
    });
  }

  static void backward(const ConvGeometry& g, const T* x, const T* w, const T* dy, T* dx,
                       bool acc_dx, T* dw, bool acc_dw, T* db, bool acc_db, T* work) {
    const Plan p = plan(g);
    const index_t K = g.patch(), P = g.pixels(), O = g.o;
    parallel_for(p.chunks, g.out_size() > 0, [&](index_t k) {
      T* col = work + k * p.per_chunk;
      T* t = col + p.cols * K;
      T* dwp = t + p.cols * O;
      T* dbp = dwp + O * K;
      std::fill(dbp, dbp + O, T(0));
      bool first = true;
      const index_t e = chunk_begin(g, p, k + 1);
      if (dx && !acc_dx) {
        const index_t b0 = chunk_begin(g, p, k) * g.c * g.h * g.w;
        std::fill(dx + b0, dx + e * g.c * g.h * g.w, T(0));
      }
      for (index_t i0 = chunk_begin(g, p, k); i0 < e; i0 += p.group) {
        const index_t m = std::min(p.group, e - i0), n = m * P;
        // dY of these images as [O x m P]: for one image its NCHW block itself, else copied
        // to t. The db partial on the way.
        const T* dym = m == 1 ? dy + i0 * O * P : t;
        for (index_t i = 0; i < m; ++i)
          for (index_t o = 0; o < O; ++o) {
            const T* d = dy + ((i0 + i) * O + o) * P;
            if (m > 1) short_run<false>(t + o * n + i * P, d, P);
            T lane[8] = {};  // 8 partial sums: a sum the compiler can vectorise
            index_t q = 0;
            for (; q + 8 <= P; q += 8)
              for (index_t u = 0; u < 8; ++u)
                lane[u] += d[q + u];
            T s = 0;
            for (; q < P; ++q)
              s += d[q];
            for (index_t u = 0; u < 8; ++u)
              s += lane[u];
            dbp[o] += s;
          }
        if (dw) {  // dW (+)= t col^T
          im2col(g, x, i0, m, col, n);
          B::gemm(false, true, O, K, n, T(1), dym, n, col, n, first ? T(0) : T(1), dwp, K);
        }
        if (dx) {  // dcol = W^T t, then back to the image
          B::gemm(true, false, K, n, O, T(1), w, K, dym, n, T(0), col, n);
          col2im(g, col, n, i0, m, dx);
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
    total(dw, acc_dw, O * K, p.cols * K + p.cols * O);
    total(db, acc_db, O, p.cols * K + p.cols * O + O * K);
  }
};

/// Max pooling on the host. idx holds, per output, the flat position (iy * w + ix) of the
/// window's maximum in its input plane (window_max, detail/conv_geometry.hpp: first position
/// on ties, the first NaN wins).
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
          index_t best;
          yp[oy * g.ow + ox] = window_max(g, xp, oy * g.stride, ox * g.stride, best);
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

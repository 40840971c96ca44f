// The host engine of batch normalisation in training mode (autodiff/batchnorm.hpp): the
// statistics, the output and the gradients channel by channel, each channel one task of
// parallel_for, in two passes over the data each way. The data is [N x C x S] (S = 1 for
// features after a Dense layer, H * W for channels after a convolution, NCHW); channel c's
// M = N * S values are its N planes of S contiguous values.
//   forward   pass 1: sum (x - k) and sum (x - k)^2 (k = the channel's first value, a shift
//                     that keeps the one-pass variance accurate when |mean| >> std);
//             pass 2: y = a x + b, a = gamma invstd, b = beta - a mean.
//   backward  pass 1: sum dy and sum dy (x - mean);
//             pass 2: dx (+)= A dy + Bc x + Cc (coefficients below).
// Fused with a ReLU after it (batch_norm_relu): the forward writes max(0, a x + b) and keeps
// a and b; the backward masks dy with [a x + b > 0], recomputed from x the same way (one
// rounding, std::fma where the target has FMA), so the ReLU costs no pass of its own. NaN
// passes both ways, as relu and relu_grad (functors.hpp) let it.
// Each plane is summed in 8 lanes of T, then added to a double total per channel, in a fixed
// order: the results do not depend on the thread count. Nothing is allocated.
// Channel-blocked data (autodiff/layout.hpp), [N x C/K x S x K] with K = 8 or 16 (`lanes`; 1 for
// the layouts above): one task per block of K channels, each channel one lane (its S values
// of a plane summed in T, then added to its double total); the same two passes each way.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "siam/backend/host_threads.hpp"
#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam::detail {

template <class T>
struct HostBatchNorm {
  // Below this many values a batch norm runs on one thread.
  static constexpr index_t parallel_threshold = 1 << 15;

  // Totals of f(q) and g(q) over q < len (8 lanes each, then the lanes in order).
  template <class F>
  static void plane_sums(index_t len, const F& f, double& t1, double& t2) {
    T l1[8] = {}, l2[8] = {};
    index_t q = 0;
    for (; q + 8 <= len; q += 8)
      for (index_t u = 0; u < 8; ++u) {
        T a, b;
        f(q + u, a, b);
        l1[u] += a;
        l2[u] += b;
      }
    T s1 = 0, s2 = 0;
    for (; q < len; ++q) {
      T a, b;
      f(q, a, b);
      s1 += a;
      s2 += b;
    }
    for (index_t u = 0; u < 8; ++u) {
      s1 += l1[u];
      s2 += l2[u];
    }
    t1 += static_cast<double>(s1);
    t2 += static_cast<double>(s2);
  }

  // a x + b with one rounding where the target has FMA, the same in both directions of the
  // fused ReLU (the backward's mask must see the forward's sign).
  static T affine(T a, T x, T b) {
#if defined(__FMA__)
    return std::fma(a, x, b);
#else
    return a * x + b;
#endif
  }

  // relu_grad(dy, z) without a branch: dy where z > 0 or z is NaN, else +0. The select is
  // written as a bit mask: GCC left the conditional in the fused backward's sums as a branch
  // per value (scalar code, mispredicted on about half of them).
  static T on_or_zero(T z, T dy) {
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    static_assert(sizeof(U) == sizeof(T));
    const U keep = U(0) - static_cast<U>(!(z <= T(0)));
    return std::bit_cast<T>(std::bit_cast<U>(dy) & keep);
  }

  /// Training forward: mean[c], var[c] (biased), invstd[c] = 1 / sqrt(var + eps), and
  /// y = gamma (x - mean) invstd + beta. n * s > 0. With `relu` non-null, y = max(0, ...) and
  /// relu[c], relu[c + C] keep the channel's a = gamma invstd and b = beta - a mean for
  /// backward_relu.
  static void forward(index_t n, index_t c, index_t s, const T* x, const T* gamma, const T* beta,
                      T eps, T* mean, T* var, T* invstd, T* y, T* relu = nullptr,
                      index_t lanes = 1) {
    if (lanes == 16)
      return Blocked<16>::forward(n, c, s, x, gamma, beta, eps, mean, var, invstd, y, relu);
    if (lanes == 8)
      return Blocked<8>::forward(n, c, s, x, gamma, beta, eps, mean, var, invstd, y, relu);
    const double m = static_cast<double>(n * s);
    parallel_for(c, n * c * s >= parallel_threshold, [&](index_t ch) {
      const T k = x[ch * s];
      double t1 = 0, t2 = 0;
      for (index_t i = 0; i < n; ++i) {
        const T* p = x + (i * c + ch) * s;
        plane_sums(
            s,
            [p, k](index_t q, T& a, T& b) {
              a = p[q] - k;
              b = a * a;
            },
            t1, t2);
      }
      const double d = t1 / m;  // mean - k
      const double v = std::max(0.0, t2 / m - d * d);
      mean[ch] = static_cast<T>(static_cast<double>(k) + d);
      var[ch] = static_cast<T>(v);
      invstd[ch] = T(1) / std::sqrt(static_cast<T>(v) + eps);
      const T a = gamma[ch] * invstd[ch], b = beta[ch] - a * mean[ch];
      if (relu) {
        relu[ch] = a;
        relu[c + ch] = b;
      }
      for (index_t i = 0; i < n; ++i) {
        const T* p = x + (i * c + ch) * s;
        T* o = y + (i * c + ch) * s;
        if (relu) {
          SIAM_IVDEP for (index_t q = 0; q < s; ++q) {
            const T z = affine(a, p[q], b);
            o[q] = z <= T(0) ? T(0) : z;  // NaN passes, as relu does
          }
        } else {
          SIAM_IVDEP for (index_t q = 0; q < s; ++q) o[q] = a * p[q] + b;
        }
      }
    });
  }

  /// Backward of the training forward. With xhat = (x - mean) invstd, M = n s values per channel:
  ///   sum_dy[c] = sum dy,  sum_dy_xhat[c] = sum dy xhat,
  ///   dx (+)= (gamma invstd / M) (M dy - sum dy - xhat sum dy xhat)
  ///         = A dy + Bc x + Cc,  A = gamma invstd, k = A / M,
  ///           Bc = -k invstd sum(dy xhat), Cc = -k sum(dy) - Bc mean.
  /// dx null: only the sums. n * s > 0. With `relu` (forward's a and b), dy is first masked
  /// by [a x + b > 0]: the backward of max(0, batch_norm(x)).
  static void backward(index_t n, index_t c, index_t s, const T* x, const T* dy, const T* gamma,
                       const T* mean, const T* invstd, T* sum_dy, T* sum_dy_xhat, T* dx,
                       bool acc_dx, const T* relu = nullptr, index_t lanes = 1) {
    if (lanes == 16)
      return Blocked<16>::backward(n, c, s, x, dy, gamma, mean, invstd, sum_dy, sum_dy_xhat, dx,
                                   acc_dx, relu);
    if (lanes == 8)
      return Blocked<8>::backward(n, c, s, x, dy, gamma, mean, invstd, sum_dy, sum_dy_xhat, dx,
                                  acc_dx, relu);
    const T m = static_cast<T>(n * s);
    parallel_for(c, n * c * s >= parallel_threshold, [&](index_t ch) {
      const T mu = mean[ch];
      const T ra = relu ? relu[ch] : T(0), rb = relu ? relu[c + ch] : T(0);
      double t1 = 0, t2 = 0;
      for (index_t i = 0; i < n; ++i) {
        const T* p = x + (i * c + ch) * s;
        const T* d = dy + (i * c + ch) * s;
        if (!relu) {
          plane_sums(
              s,
              [p, d, mu](index_t q, T& a, T& b) {
                a = d[q];
                b = d[q] * (p[q] - mu);
              },
              t1, t2);
          continue;
        }
        plane_sums(
            s,
            [p, d, mu, ra, rb](index_t q, T& a, T& b) {
              const T dq = d[q], xq = p[q];  // loaded unconditionally: vectorised
              a = on_or_zero(affine(ra, xq, rb), dq);
              b = a * (xq - mu);
            },
            t1, t2);
      }
      const T sd = static_cast<T>(t1), sx = static_cast<T>(t2) * invstd[ch];
      sum_dy[ch] = sd;
      sum_dy_xhat[ch] = sx;
      if (!dx) return;
      const T A = gamma[ch] * invstd[ch], k = A / m;
      const T Bc = -k * invstd[ch] * sx;
      const T Cc = -k * sd - Bc * mu;
      for (index_t i = 0; i < n; ++i) {
        const T* p = x + (i * c + ch) * s;
        const T* d = dy + (i * c + ch) * s;
        T* o = dx + (i * c + ch) * s;
        if (relu) {
          if (acc_dx) {
            SIAM_IVDEP for (index_t q = 0; q < s; ++q) {
              const T dq = d[q], xq = p[q];
              o[q] += A * (affine(ra, xq, rb) <= T(0) ? T(0) : dq) + Bc * xq + Cc;
            }
          } else {
            SIAM_IVDEP for (index_t q = 0; q < s; ++q) {
              const T dq = d[q], xq = p[q];
              o[q] = A * (affine(ra, xq, rb) <= T(0) ? T(0) : dq) + Bc * xq + Cc;
            }
          }
        } else if (acc_dx) {
          SIAM_IVDEP for (index_t q = 0; q < s; ++q) o[q] += A * d[q] + Bc * p[q] + Cc;
        } else {
          SIAM_IVDEP for (index_t q = 0; q < s; ++q) o[q] = A * d[q] + Bc * p[q] + Cc;
        }
      }
    });
  }

  // The blocked layout, K = 8 or 16 lanes: channel ch = b K + u of block b is lane u, and
  // the K channels of a block go through the passes together as one vector (GCC/Clang vector
  // extensions, so that each lane stays one channel: left to itself, GCC vectorised these
  // loops across positions and scattered the lanes). The same formulas as the NCHW code
  // above, the shift of the one-pass variance the channel's first value. Vectors are only
  // ever locals (no vector parameter or return: no ABI question without -march).
  template <index_t K>
  struct Blocked {
    static constexpr auto bytes = static_cast<std::size_t>(K) * sizeof(T);
    using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
    typedef T V __attribute__((vector_size(bytes)));
    typedef I M __attribute__((vector_size(bytes)));

    static void forward(index_t n, index_t c, index_t s, const T* x, const T* gamma, const T* beta,
                        T eps, T* mean, T* var, T* invstd, T* y, T* relu) {
      const index_t cb = c / K;
      const double m = static_cast<double>(n * s);
      parallel_for(cb, n * c * s >= parallel_threshold, [&](index_t b) {
        V sh, a, bb;
        std::memcpy(&sh, x + b * s * K, bytes);
        double t1[K] = {}, t2[K] = {};
        for (index_t i = 0; i < n; ++i) {
          const T* p = x + (i * cb + b) * s * K;
          V l1 = {}, l2 = {};
          for (index_t q = 0; q < s; ++q) {
            V v;
            std::memcpy(&v, p + q * K, bytes);
            const V d = v - sh;
            l1 += d;
            l2 += d * d;
          }
          for (index_t u = 0; u < K; ++u) {
            t1[u] += static_cast<double>(l1[u]);
            t2[u] += static_cast<double>(l2[u]);
          }
        }
        for (index_t u = 0; u < K; ++u) {
          const index_t ch = b * K + u;
          const double d = t1[u] / m;
          const double v = std::max(0.0, t2[u] / m - d * d);
          mean[ch] = static_cast<T>(static_cast<double>(sh[u]) + d);
          var[ch] = static_cast<T>(v);
          invstd[ch] = T(1) / std::sqrt(static_cast<T>(v) + eps);
          a[u] = gamma[ch] * invstd[ch];
          bb[u] = beta[ch] - a[u] * mean[ch];
          if (relu) {
            relu[ch] = a[u];
            relu[c + ch] = bb[u];
          }
        }
        const V zero = {};
        for (index_t i = 0; i < n; ++i) {
          const T* p = x + (i * cb + b) * s * K;
          T* o = y + (i * cb + b) * s * K;
          for (index_t q = 0; q < s; ++q) {
            V v;
            std::memcpy(&v, p + q * K, bytes);
            V z = a * v + bb;
            if (relu) z = (V)((M)z & ~(M)(z <= zero));  // max(0, z); NaN passes
            std::memcpy(o + q * K, &z, bytes);
          }
        }
      });
    }
    static void backward(index_t n, index_t c, index_t s, const T* x, const T* dy, const T* gamma,
                         const T* mean, const T* invstd, T* sum_dy, T* sum_dy_xhat, T* dx,
                         bool acc_dx, const T* relu) {
      const index_t cb = c / K;
      const T m = static_cast<T>(n * s);
      parallel_for(cb, n * c * s >= parallel_threshold, [&](index_t b) {
        V mu, ra = {}, rb = {}, A, Bc, Cc;
        for (index_t u = 0; u < K; ++u) {
          const index_t ch = b * K + u;
          mu[u] = mean[ch];
          if (relu) {
            ra[u] = relu[ch];
            rb[u] = relu[c + ch];
          }
        }
        const V zero = {};
        double t1[K] = {}, t2[K] = {};
        for (index_t i = 0; i < n; ++i) {
          const T* p = x + (i * cb + b) * s * K;
          const T* d = dy + (i * cb + b) * s * K;
          V l1 = {}, l2 = {};
          for (index_t q = 0; q < s; ++q) {
            V v, g;
            std::memcpy(&v, p + q * K, bytes);
            std::memcpy(&g, d + q * K, bytes);
            if (relu) g = (V)((M)g & ~(M)(ra * v + rb <= zero));  // dy [z > 0]; NaN passes
            l1 += g;
            l2 += g * (v - mu);
          }
          for (index_t u = 0; u < K; ++u) {
            t1[u] += static_cast<double>(l1[u]);
            t2[u] += static_cast<double>(l2[u]);
          }
        }
        for (index_t u = 0; u < K; ++u) {
          const index_t ch = b * K + u;
          const T sd = static_cast<T>(t1[u]), sx = static_cast<T>(t2[u]) * invstd[ch];
          sum_dy[ch] = sd;
          sum_dy_xhat[ch] = sx;
          A[u] = gamma[ch] * invstd[ch];
          const T kq = A[u] / m;
          Bc[u] = -kq * invstd[ch] * sx;
          Cc[u] = -kq * sd - Bc[u] * mu[u];
        }
        if (!dx) return;
        for (index_t i = 0; i < n; ++i) {
          const T* p = x + (i * cb + b) * s * K;
          const T* d = dy + (i * cb + b) * s * K;
          T* o = dx + (i * cb + b) * s * K;
          for (index_t q = 0; q < s; ++q) {
            V v, g;
            std::memcpy(&v, p + q * K, bytes);
            std::memcpy(&g, d + q * K, bytes);
            if (relu) g = (V)((M)g & ~(M)(ra * v + rb <= zero));
            V r = A * g + Bc * v + Cc;
            if (acc_dx) {
              V prev;
              std::memcpy(&prev, o + q * K, bytes);
              r += prev;
            }
            std::memcpy(o + q * K, &r, bytes);
          }
        }
      });
    }
  };
};

}  // namespace siam::detail

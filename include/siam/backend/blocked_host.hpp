// Channel-blocked activations on the host: NCHW [N x C x S] (S = H W) and the blocked
// layout [N x ceil(C/K) x S x K], channel c at block c / K, lane c % K (oneDNN's nChw16c and
// nChw8c for K = 16 and 8). The copies between the two run in tiles of K positions x K
// channels for K = 8 and 16 (a transpose through a small array that the compiler keeps in
// registers), one scalar loop otherwise. The lanes of a last, partial block are skipped when
// unblocking and written as zeros when blocking (what oneDNN expects there). Used by the
// layout ops (autodiff/layout.hpp) and by the oneDNN engine's copy-outs.
#pragma once

#include <algorithm>

#include "siam/backend/host_threads.hpp"
#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam::detail {

template <class T>
struct HostBlocked {
  /// Blocks of K channels in c channels.
  static index_t blocks(index_t c, index_t k) { return (c + k - 1) / k; }

  /// y[i, c, q] (+)= blk[i, c / K, q, c % K].
  template <bool Acc>
  static void unblock(index_t n, index_t c, index_t s, index_t k, const T* blk, T* y) {
    if (k == 16) return run<16, Acc, false>(n, c, s, blk, y);
    if (k == 8) return run<8, Acc, false>(n, c, s, blk, y);
    run_any<Acc, false>(n, c, s, k, blk, y);
  }
  /// blk[i, c / K, q, c % K] (+)= x[i, c, q]; lanes past c are set to zero.
  template <bool Acc>
  static void block(index_t n, index_t c, index_t s, index_t k, const T* x, T* blk) {
    if (k == 16) return run<16, Acc, true>(n, c, s, x, blk);
    if (k == 8) return run<8, Acc, true>(n, c, s, x, blk);
    run_any<Acc, true>(n, c, s, k, x, blk);
  }

 private:
  template <bool Acc>
  static void put(T& to, T v) {
    if constexpr (Acc)
      to += v;
    else
      to = v;
  }
  // One task per (example, block): plain plane p[u * s + q] against blocked b[q * K + u].
  // ToBlocked: b is written; else the plain planes are.
  template <index_t K, bool Acc, bool ToBlocked>
  static void run(index_t n, index_t c, index_t s, const T* from, T* to) {
    const index_t cb = blocks(c, K);
    parallel_for(n * cb, n * c * s >= (1 << 15), [&](index_t t) {
      const index_t i = t / cb, b = t % cb, cn = std::min(K, c - b * K);
      const T* src = from + (ToBlocked ? (i * c + b * K) * s : t * s * K);
      T* dst = to + (ToBlocked ? t * s * K : (i * c + b * K) * s);
      constexpr auto k = static_cast<std::size_t>(K);
      index_t q0 = 0;
      for (; q0 + K <= s; q0 += K) {
        T tile[k][k];  // ToBlocked: [position][channel]; else [channel][position]
        if constexpr (ToBlocked) {
          for (index_t u = 0; u < K; ++u)
            for (index_t q = 0; q < K; ++q)
              tile[q][u] = u < cn ? src[u * s + q0 + q] : T(0);
          for (index_t q = 0; q < K; ++q)
            for (index_t u = 0; u < K; ++u)
              put<Acc>(dst[(q0 + q) * K + u], tile[q][u]);
        } else {
          for (index_t q = 0; q < K; ++q)
            for (index_t u = 0; u < K; ++u)
              tile[u][q] = src[(q0 + q) * K + u];
          for (index_t u = 0; u < cn; ++u)
            for (index_t q = 0; q < K; ++q)
              put<Acc>(dst[u * s + q0 + q], tile[u][q]);
        }
      }
      for (index_t q = q0; q < s; ++q)
        for (index_t u = 0; u < K; ++u)
          if constexpr (ToBlocked)
            put<Acc>(dst[q * K + u], u < cn ? src[u * s + q] : T(0));
          else if (u < cn)
            put<Acc>(dst[u * s + q], src[q * K + u]);
    });
  }
  template <bool Acc, bool ToBlocked>
  static void run_any(index_t n, index_t c, index_t s, index_t k, const T* from, T* to) {
    const index_t cb = blocks(c, k);
    parallel_for(n * cb, n * c * s >= (1 << 15), [&](index_t t) {
      const index_t i = t / cb, b = t % cb, cn = std::min(k, c - b * k);
      const T* plain = ToBlocked ? from + (i * c + b * k) * s : nullptr;
      const T* blk = ToBlocked ? nullptr : from + t * s * k;
      for (index_t q = 0; q < s; ++q)
        for (index_t u = 0; u < k; ++u)
          if constexpr (ToBlocked)
            put<Acc>(to[(t * s + q) * k + u], u < cn ? plain[u * s + q] : T(0));
          else if (u < cn)
            put<Acc>(to[(i * c + b * k + u) * s + q], blk[q * k + u]);
    });
  }
};

}  // namespace siam::detail

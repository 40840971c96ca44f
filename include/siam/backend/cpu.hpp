// The CPU backend: aligned host memory, GEMM from the configured provider (oneDNN, a
// BLAS behind Eigen, or Eigen's own product: cpu_gemm.hpp), and an evaluator that runs an
// expression kernel as one vectorisable loop, split across OpenMP threads when the tensor is large.
//
// A backend is a type with static functions; the op code never touches its loops.
#pragma once

// GCC 12 reports false "maybe-uninitialized" warnings inside its own AVX-512 intrinsics
// when Eigen's GEMM kernels are inlined; they are not ours to fix.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <tuple>
#include <type_traits>
#include <vector>

#include "siam/backend/cpu_gemm.hpp"
#include "siam/backend/host_threads.hpp"
#include "siam/backend/precision.hpp"
#include "siam/backend/step_graph.hpp"
#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace siam {

namespace detail {
inline std::atomic<MatmulPrecision>& cpu_matmul_precision() noexcept {
  static std::atomic<MatmulPrecision> p{MatmulPrecision::highest};
  return p;
}

// The emulation of a reduced-precision mode (precision.hpp): op(A) and op(B) copied with
// their inputs rounded into per-thread scratch (allocated once, then reused), then the
// provider's FP32 GEMM on the copies.
inline void gemm_rounded(MatmulPrecision p, bool trans_a, bool trans_b, index_t m, index_t n,
                         index_t k, float alpha, const float* A, index_t lda, const float* B,
                         index_t ldb, float beta, float* C, index_t ldc) {
  thread_local std::vector<float> a, b;
  const int bits = mantissa_bits(p);
  const auto copy = [bits](std::vector<float>& out, const float* x, index_t rows, index_t cols,
                           index_t ld) {
    out.resize(static_cast<std::size_t>(rows * cols));
    float* o = out.data();
    SIAM_OMP(parallel for schedule(static) if (rows * cols > (1 << 16)))
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c)
        o[r * cols + c] = round_mantissa(x[r * ld + c], bits);
  };
  const index_t ra = trans_a ? k : m, ca = trans_a ? m : k;
  const index_t rb = trans_b ? n : k, cb = trans_b ? k : n;
  copy(a, A, ra, ca, lda);
  copy(b, B, rb, cb, ldb);
  gemm<float>(trans_a, trans_b, m, n, k, alpha, a.data(), ca, b.data(), cb, beta, C, ldc);
}
}  // namespace detail

/// Sets the number of threads used by the CPU backend (OpenMP loops and Eigen's GEMM).
inline void set_num_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}
inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

struct Cpu {
  static constexpr bool is_host = true;
  static constexpr const char* name = "cpu";
  /// Capture-and-replay of a step: on the host, replay simply runs the work again.
  using StepGraph = detail::ReplayGraph;
  // Below this many elements a loop runs on one thread: a fork/join costs more.
  static constexpr index_t parallel_threshold = 1 << 15;

  template <class T>
  static T* allocate(index_t n) {
    if (n == 0) return nullptr;
    return static_cast<T*>(
        ::operator new (sizeof(T) * static_cast<std::size_t>(n), std::align_val_t{64}));
  }
  template <class T>
  static void deallocate(T* p, index_t) noexcept {
    if (p) ::operator delete (p, std::align_val_t{64});
  }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) {
    if (n) std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void to_host(T* host_dst, const T* src, index_t n) {
    copy(host_dst, src, n);
  }
  template <class T>
  static void from_host(T* dst, const T* host_src, index_t n) {
    copy(dst, host_src, n);
  }
  static void synchronize() {}

  /// dst row i = src row idx[i] (idx on the host), rows of `cols` elements.
  template <class T>
  static void gather_rows(T* dst, const T* src, const std::uint32_t* idx, index_t n, index_t cols) {
    detail::parallel_for(n, n * cols >= parallel_threshold, [&](index_t i) {
      copy(dst + i * cols, src + static_cast<index_t>(idx[i]) * cols, cols);
    });
  }

  /// dst[r, c] = k(r, c) for a rows x cols row-major destination with row stride ld.
  template <class T, class K>
  static void assign(T* dst, index_t rows, index_t cols, const K& k) {
    const bool par = rows * cols >= parallel_threshold;
    if (rows == 1) {
      // One long row (also every flat evaluation): split it into chunks.
      detail::parallel_for((cols + chunk - 1) / chunk, par, [&](index_t t) {
        const K kl = k;  // a local copy: stores to dst cannot alias its scalars
        const index_t b = t * chunk, e = std::min(cols, b + chunk);
        SIAM_IVDEP for (index_t c = b; c < e; ++c) dst[c] = kl(0, c);
      });
      return;
    }
    detail::parallel_for(rows, par, [&](index_t r) {
      const K kl = k;
      T* row = dst + r * cols;
      SIAM_IVDEP for (index_t c = 0; c < cols; ++c) row[c] = kl(r, c);
    });
  }

  /// Several assignments fused in one loop: at every index, each (dst, kernel) pair is
  /// evaluated and stored in order, so later kernels see earlier results (Adam: m, v, p).
  template <class T, class... Pairs>
  static void assign_fused(index_t n, const Pairs&... pairs) {
    detail::parallel_for((n + chunk - 1) / chunk, n >= parallel_threshold, [&](index_t t) {
      fused_block(t * chunk, std::min(n, (t + 1) * chunk), pairs...);
    });
  }

  /// Runs each group (a FusedGroup of tensor.hpp) as assign_fused does.
  template <class T, class G>
  static void assign_fused_batch(const G* groups, std::size_t count) {
    for (std::size_t gi = 0; gi < count; ++gi) {
      const G& g = groups[gi];
      detail::parallel_for((g.n + chunk - 1) / chunk, g.n >= parallel_threshold, [&](index_t t) {
        const index_t e = std::min(g.n, (t + 1) * chunk);
        apply_pairs(g.pairs, [&](const auto&... p) { fused_block(t * chunk, e, p...); });
      });
    }
  }

  /// out[c] (+)= sum_r k(r, c): the column totals, added in an order fixed by the shape
  /// alone, so the result does not depend on the thread count.
  template <class T, class K>
  static void sum_rows(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    sum_rows_impl(out, rows, cols, k, accumulate, static_cast<T*>(nullptr));
  }

  /// dst[r, c] = k(r, c) and out[c] (+)= sum_r dst[r, c] in one pass (ReLU backward and
  /// the bias gradient of the layer below it).
  template <class T, class K>
  static void assign_sum_rows(T* dst, T* out, index_t rows, index_t cols, const K& k,
                              bool accumulate) {
    sum_rows_impl(out, rows, cols, k, accumulate, dst);
  }

  /// out[r] (+)= sum_c k(r, c): one total per row.
  template <class T, class K>
  static void sum_cols(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    detail::parallel_for(rows, rows * cols >= parallel_threshold, [&](index_t r) {
      T acc = 0;
      for (index_t c = 0; c < cols; ++c)
        acc += k(r, c);
      out[r] = accumulate ? out[r] + acc : acc;
    });
  }

  /// out[r] = max_c k(r, c): the largest value of each row (a row of none gives -inf; a row
  /// holding NaN gives NaN).
  template <class T, class K>
  static void max_cols(T* out, index_t rows, index_t cols, const K& k) {
    detail::parallel_for(rows, rows * cols >= parallel_threshold, [&](index_t r) {
      T m = -std::numeric_limits<T>::infinity();
      for (index_t c = 0; c < cols; ++c) {
        const T v = k(r, c);
        m = (v > m || v != v) ? v : m;
      }
      out[r] = m;
    });
  }

  /// dst row idx[i] += src row i for i in [0, n) (idx on the host; repeated indices add
  /// up, in the order of i, so the result does not depend on the thread count).
  template <class T>
  static void scatter_add_rows(T* dst, const T* src, const std::uint32_t* idx, index_t n,
                               index_t cols) {
    const index_t panel = 1024;  // threads own column panels and walk every index in order
    detail::parallel_for((cols + panel - 1) / panel, n * cols >= parallel_threshold,
                         [&](index_t p) {
                           const index_t lo = p * panel, hi = std::min(cols, lo + panel);
                           for (index_t i = 0; i < n; ++i) {
                             T* d = dst + static_cast<index_t>(idx[i]) * cols;
                             const T* s = src + i * cols;
                             SIAM_IVDEP for (index_t c = lo; c < hi; ++c) d[c] += s[c];
                           }
                         });
  }

  /// out[0] (+)= sum of all. Fixed-size blocks, each summed in 16 interleaved lanes
  /// (so the loop vectorises), then combined in order: the result does not depend on
  /// the thread count.
  template <class T, class K>
  static void sum_all(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    constexpr index_t lanes = 16;
    const index_t n = rows * cols;
    const T total = ordered_sum<T>(n, chunk, n >= parallel_threshold, [&](index_t b, index_t end) {
      T acc[lanes] = {};
      for (index_t i = b; i < end;) {  // walk the block one row segment at a time
        const index_t r = i / cols, c0 = i - r * cols, c1 = std::min(cols, c0 + (end - i));
        index_t c = c0;
        for (; c + lanes <= c1; c += lanes)
          for (index_t l = 0; l < lanes; ++l)
            acc[l] += k(r, c + l);
        for (; c < c1; ++c)
          acc[0] += k(r, c);
        i += c1 - c0;
      }
      T t = 0;
      for (index_t l = 0; l < lanes; ++l)
        t += acc[l];
      return t;
    });
    out[0] = accumulate ? out[0] + total : total;
  }

  /// The contrastive loss of n pairs (rows a_i, b_i of `dim` values, contiguous) with
  /// labels y, as in loss/contrastive.hpp, in one pass over the pairs:
  ///   loss[0] = scale * sum_i [y_i d_i^2 + (1 - y_i) max(m - d_i, 0)^2],
  ///   c[i] = 2 scale [y_i - (1 - y_i) max(m - d_i, 0) / d_i]   (the gradient's coefficient),
  /// d_i = sqrt(|a_i - b_i|^2 + eps). Pairs are summed in fixed blocks, in order.
  template <class T>
  static void contrastive_forward(const T* a, const T* b, const T* y, index_t n, index_t dim,
                                  T margin, T scale, T eps, T* c, T* loss) {
    T total = 0;
    with_dim(dim, [&](auto fixed) {
      const index_t D = fixed ? fixed() : dim;  // a constant for 2-D embeddings
      total = ordered_sum<T>(n, 1024, n * D >= parallel_threshold, [&](index_t i0, index_t i1) {
        // Locals, so that the stores to c cannot be taken to change them (the loop
        // vectorises across pairs).
        const T *pa = a, *pb = b, *py = y;
        T* pc = c;
        const T m = margin, e2 = eps, s2 = T(2) * scale;
        T t = 0;
        SIAM_IVDEP for (index_t i = i0; i < i1; ++i) {
          T d2 = 0;
          for (index_t j = 0; j < D; ++j)
            d2 += (pa[i * D + j] - pb[i * D + j]) * (pa[i * D + j] - pb[i * D + j]);
          const T d = std::sqrt(d2 + e2);
          const T hinge = m - d > T(0) ? m - d : T(0);
          t += py[i] * (d * d) + (T(1) - py[i]) * (hinge * hinge);
          pc[i] = s2 * (py[i] - (T(1) - py[i]) * hinge / d);
        }
        return t;
      });
    });
    loss[0] = scale * total;
  }

  /// The contrastive loss's backward: ga_i (+)= dl c_i (a_i - b_i) and gb_i (+)= dl c_i
  /// (b_i - a_i), adding where acc_a / acc_b, skipping a null ga or gb. dl points to the
  /// loss's incoming gradient. ga and gb may be the same buffer (f1 and f2 one input).
  template <class T>
  static void contrastive_backward(const T* a, const T* b, const T* c, const T* dl, index_t n,
                                   index_t dim, T* ga, bool acc_a, T* gb, bool acc_b) {
    // One loop: g1 (+)= sign dl c_i (a_i - b_i) and, when g2 is given, g2 (+)= -(that).
    auto run = [&](T* g1, bool add1, T sign, T* g2, bool add2) {
      with_bool(add1, [&](auto acc1) {
        with_bool(add2, [&](auto acc2) {
          with_dim(dim, [&](auto fixed) {
            const index_t D = fixed ? fixed() : dim;  // a constant for 2-D embeddings
            detail::parallel_for((n + 1023) / 1024, n * D >= parallel_threshold, [&](index_t blk) {
              const T *pa = a, *pb = b, *pc = c;  // locals: see contrastive_forward
              T *p1 = g1, *p2 = g2;
              const T k = sign * dl[0];
              const index_t i1 = std::min(n, (blk + 1) * 1024);
              SIAM_IVDEP for (index_t i = blk * 1024; i < i1; ++i) {
                for (index_t j = 0; j < D; ++j) {
                  const index_t x = i * D + j;
                  const T v = k * pc[i] * (pa[x] - pb[x]);
                  p1[x] = acc1 ? p1[x] + v : v;
                  if (p2) p2[x] = acc2 ? p2[x] - v : -v;
                }
              }
            });
          });
        });
      });
    };
    if (ga && gb && ga != gb) {
      run(ga, acc_a, T(1), gb, acc_b);
    } else {  // one output, or one buffer for both (then its contributions go in order)
      if (ga) run(ga, acc_a, T(1), nullptr, false);
      if (gb) run(gb, acc_b || gb == ga, T(-1), nullptr, false);
    }
  }

  /// Row-major C[m x n] = alpha op(A)[m x k] op(B)[k x n] + beta C with row strides
  /// lda, ldb, ldc. beta == 0 never reads C (it may hold garbage). Runs the provider
  /// the library was configured with (cpu_gemm.hpp, gemm_provider()).
  template <class T>
  static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
                   index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
    if constexpr (std::is_same_v<T, float>) {
      const MatmulPrecision p = matmul_precision();
      if (p != MatmulPrecision::highest && m > 0 && n > 0 && k > 0)
        return detail::gemm_rounded(p, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C,
                                    ldc);
    }
    detail::gemm<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  /// How float GEMMs compute (precision.hpp). On the CPU, high (TF32) and medium (BF16) are
  /// an emulation for checking what the GPU modes do to results: each GEMM's inputs are
  /// rounded into scratch copies first, so it is slower and allocates on its first use per
  /// thread and size. highest (the default) is the plain FP32 GEMM. Process-wide.
  static MatmulPrecision matmul_precision() noexcept {
    return detail::cpu_matmul_precision().load(std::memory_order_relaxed);
  }
  static void set_matmul_precision(MatmulPrecision p) noexcept {
    detail::cpu_matmul_precision().store(p, std::memory_order_relaxed);
  }
  /// The float GEMM's provider: "onednn", "openblas", "blis" or "eigen".
  static constexpr const char* gemm_name() { return gemm_provider(); }

 private:
  static constexpr index_t chunk = 4096;

  // Kernels are copied to locals first: a kernel's scalars live in memory the compiler
  // would otherwise have to assume the destination stores may overwrite, which blocks
  // vectorisation.
  template <class... Pairs>
  static void fused_block(index_t b, index_t e, const Pairs&... pairs) {
    fused_block_local(b, e, std::pair{pairs.first, pairs.second}...);
  }
  template <class... Pairs>
  static void fused_block_local(index_t b, index_t e, Pairs... p) {
    SIAM_IVDEP for (index_t c = b; c < e; ++c)((p.first[c] = p.second(0, c)), ...);
  }

  // Sum of block_total(b, e) over the blocks [b, e) of [0, n): at most 64 blocks of at
  // least min_block items, fixed by n alone, totalled in parallel (when `parallel`) and
  // added in order, so the result does not depend on the thread count.
  template <class T, class F>
  static T ordered_sum(index_t n, index_t min_block, bool parallel, const F& block_total) {
    constexpr index_t max_blocks = 64;
    const index_t block =
        std::max<index_t>(std::max<index_t>(min_block, 1), (n + max_blocks - 1) / max_blocks);
    const index_t nblocks = n <= 0 ? 0 : (n + block - 1) / block;
    T partial[max_blocks];
    detail::parallel_for(nblocks, parallel, [&](index_t b) {
      partial[b] = block_total(b * block, std::min(n, (b + 1) * block));
    });
    T total = 0;
    for (index_t b = 0; b < nblocks; ++b)
      total += partial[b];
    return total;
  }

  // Calls f with std::true_type or std::false_type: a runtime flag made a constant, so
  // that the loop it chooses has no branch.
  template <class F>
  static void with_bool(bool b, const F& f) {
    if (b)
      f(std::true_type{});
    else
      f(std::false_type{});
  }
  // Calls f with a constant for the common row width 2 (2-D embeddings: fully unrolled
  // inner loops), else with a zero constant, meaning "use the runtime width".
  template <class F>
  static void with_dim(index_t dim, const F& f) {
    if (dim == 2)
      f(std::integral_constant<index_t, 2>{});
    else
      f(std::integral_constant<index_t, 0>{});
  }

  // acc[c] += k(r, lo + c) for c < n (acc[c] = ... on a block's first row), and also
  // row[c] = the same values unless row is null. Its own function: the kernel and the
  // bounds are locals here, which stores through acc and row cannot be taken to change.
  template <class T, class K>
  static void row_totals(const K& k, index_t r, index_t lo, index_t n, T* row, T* acc, bool first) {
    const K kl = k;
    if (row) {
      if (first) {
        SIAM_IVDEP for (index_t c = 0; c < n; ++c) acc[c] = row[c] = kl(r, lo + c);
      } else {
        SIAM_IVDEP for (index_t c = 0; c < n; ++c) {
          const T v = kl(r, lo + c);
          row[c] = v;
          acc[c] += v;
        }
      }
    } else if (first) {
      SIAM_IVDEP for (index_t c = 0; c < n; ++c) acc[c] = kl(r, lo + c);
    } else {
      SIAM_IVDEP for (index_t c = 0; c < n; ++c) acc[c] += kl(r, lo + c);
    }
  }

  // Column totals (and optionally the values themselves). The rows are cut into blocks
  // whose number depends only on the shape (a power of two, at least 64K elements each:
  // more would cost more in combining than they save); each task walks whole rows of one
  // block, as a plain loop would. Block 0 sums straight into `out`, the others into
  // partial totals that are then added block by block in order, so the result does not
  // depend on the thread count. Columns go in panels of at most `panel` so the partials
  // fit a fixed stack buffer.
  template <class T, class K>
  static void sum_rows_impl(T* out, index_t rows, index_t cols, const K& k, bool accumulate,
                            T* dst) {
    constexpr index_t budget = 32768 / sizeof(T), panel = 1024, min_block = 1 << 16;
    alignas(64) T part[budget];
    const bool par = rows * cols >= parallel_threshold;
    for (index_t c0 = 0; c0 < cols; c0 += panel) {
      const index_t w = std::min(panel, cols - c0);
      index_t nb = 1;
      while (2 * nb <= budget / w + 1 && 2 * nb * min_block <= rows * w && 2 * nb <= rows)
        nb *= 2;
      const index_t rb = rows == 0 ? 0 : (rows + nb - 1) / nb;
      nb = rows == 0 ? 1 : (rows + rb - 1) / rb;
      constexpr index_t strip = 64;  // columns per task of the combining phase
      const index_t ns = nb > 1 ? (w + strip - 1) / strip : 0;
      if (rows == 0 && !accumulate) std::fill(out + c0, out + c0 + w, T(0));
      detail::parallel_for_then(
          rows == 0 ? 0 : nb, ns, par,
          [&](index_t b) {
            const index_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
            T* const acc = b == 0 ? out + c0 : part + (b - 1) * w;
            // The first row initialises the totals (block 0 adds to `out` when accumulating).
            const index_t first = b == 0 && accumulate ? -1 : r0;
            for (index_t r = r0; r < r1; ++r)
              row_totals(k, r, c0, w, dst ? dst + r * cols + c0 : nullptr, acc, r == first);
          },
          [&](index_t st) {
            const index_t cb = st * strip, ce = std::min(w, cb + strip);
            T* const o = out + c0;
            for (index_t b = 1; b < nb; ++b)  // block order: fixed
              SIAM_IVDEP for (index_t c = cb; c < ce; ++c) o[c] += part[(b - 1) * w + c];
          });
    }
  }
};

}  // namespace siam

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

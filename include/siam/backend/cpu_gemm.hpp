// The CPU backend's matrix product and where it comes from. The provider is fixed when
// the library is configured (CMake's SIAM_BLAS, default `auto`: the fastest one
// installed, see docs/benchmarks.md):
//   onednn    oneDNN's dnnl_sgemm (float; double goes to Eigen, oneDNN has no dgemm),
//             selected by SIAM_GEMM_ONEDNN;
//   openblas  OpenBLAS behind Eigen's product (EIGEN_USE_BLAS, SIAM_BLAS_NAME="openblas");
//   blis      BLIS, the same way;
//   eigen     Eigen's own product, always available (a plain include path needs nothing).
// gemm_provider() names the one in use, for logs and result files.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)  // as in cpu.hpp: GCC 12 inside Eigen's kernels
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <algorithm>
#include <string>
#include <type_traits>

#include "siam/detail/config.hpp"
#include "siam/error.hpp"
#include "siam/shape.hpp"

#if defined(SIAM_GEMM_ONEDNN)
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <exception>
#if defined(_OPENMP)
#include <omp.h>
#endif
#endif

namespace siam {

/// The library that performs siam's float matrix products on the CPU: "onednn",
/// "openblas", "blis" or "eigen".
constexpr const char* gemm_provider() noexcept {
#if defined(SIAM_GEMM_ONEDNN)
  return "onednn";
#elif defined(EIGEN_USE_BLAS) && defined(SIAM_BLAS_NAME)
  return SIAM_BLAS_NAME;
#elif defined(EIGEN_USE_BLAS)
  return "blas";
#else
  return "eigen";
#endif
}

}  // namespace siam

namespace siam::detail {

/// Row-major C[m x n] = alpha op(A) op(B) + beta C through Eigen's product (or the BLAS
/// behind it with EIGEN_USE_BLAS). beta == 0 never reads C. k == 0 only scales C.
template <class T>
void gemm_eigen(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
                index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat, Eigen::Unaligned, Eigen::OuterStride<>>;
  using MMap = Eigen::Map<Mat, Eigen::Unaligned, Eigen::OuterStride<>>;
  if (m == 0 || n == 0) return;
  MMap c(C, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0))
    c.setZero();
  else if (beta != T(1))
    c *= beta;
  if (k == 0) return;
  CMap a(A, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  CMap b(B, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  if (!trans_a && !trans_b)
    c.noalias() += alpha * a * b;
  else if (trans_a && !trans_b)
    c.noalias() += alpha * a.transpose() * b;
  else if (!trans_a && trans_b)
    c.noalias() += alpha * a * b.transpose();
  else
    c.noalias() += alpha * a.transpose() * b.transpose();
}

/// Row-major C[m x n] = alpha op(A) op(B) + beta C on one thread, for the products where n
/// or k is at most skinny_max (a network's narrow embedding layer: its forward, its input
/// gradient and its weight gradient), which a GEMM library spends more time packing than
/// multiplying. Each element is one sum in an order fixed by the build (the dot products are
/// vectorised, OpenMP's simd reduction). beta == 0 never reads C. Needs k > 0.
inline constexpr index_t skinny_max = 4;
template <class T>
void gemm_skinny(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
                 index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  constexpr index_t chunk = 512;  // a block of op(B) (or of C's columns) on the stack: 8 KB
  T buf[skinny_max][chunk];
  auto b_at = [&](index_t p, index_t j) { return trans_b ? B[j * ldb + p] : B[p * ldb + j]; };
  auto store = [&](T* c, T v) { *c = beta == T(0) ? alpha * v : alpha * v + beta * *c; };
  if (n <= skinny_max && !trans_a) {  // C[i, j] = dot(row i of A, column j of op(B))
    for (index_t p0 = 0; p0 < k; p0 += chunk) {
      const index_t kc = std::min(chunk, k - p0);
      for (index_t j = 0; j < n; ++j)
        for (index_t q = 0; q < kc; ++q)
          buf[j][q] = b_at(p0 + q, j);
      for (index_t i = 0; i < m; ++i) {
        const T* a = A + i * lda + p0;
        for (index_t j = 0; j < n; ++j) {
          const T* b = buf[j];
          T sum = 0;
          SIAM_OMP(simd reduction(+ : sum))
          for (index_t q = 0; q < kc; ++q)
            sum += a[q] * b[q];
          T* c = C + i * ldc + j;
          if (p0 == 0)
            store(c, sum);
          else
            *c += alpha * sum;
        }
      }
    }
  } else if (n <= skinny_max) {  // op(A) = A^T: C's column j += op(B)[p, j] * row p of A
    for (index_t i0 = 0; i0 < m; i0 += chunk) {
      const index_t mc = std::min(chunk, m - i0);
      for (index_t j = 0; j < n; ++j)
        std::fill(buf[j], buf[j] + mc, T(0));
      for (index_t p = 0; p < k; ++p) {
        const T* a = A + p * lda + i0;
        for (index_t j = 0; j < n; ++j) {
          const T b = b_at(p, j);
          SIAM_IVDEP for (index_t q = 0; q < mc; ++q) buf[j][q] += b * a[q];
        }
      }
      for (index_t q = 0; q < mc; ++q)
        for (index_t j = 0; j < n; ++j)
          store(C + (i0 + q) * ldc + j, buf[j][q]);
    }
  } else {  // k <= skinny_max: row i of C = sum over p of op(A)[i, p] * row p of op(B)
    T acc[chunk];
    for (index_t j0 = 0; j0 < n; j0 += chunk) {
      const index_t nc = std::min(chunk, n - j0);
      for (index_t p = 0; p < k; ++p)
        for (index_t q = 0; q < nc; ++q)
          buf[p][q] = b_at(p, j0 + q);
      for (index_t i = 0; i < m; ++i) {
        for (index_t p = 0; p < k; ++p) {
          const T a = trans_a ? A[p * lda + i] : A[i * lda + p];
          if (p == 0) {
            SIAM_IVDEP for (index_t q = 0; q < nc; ++q) acc[q] = a * buf[0][q];
          } else {
            SIAM_IVDEP for (index_t q = 0; q < nc; ++q) acc[q] += a * buf[p][q];
          }
        }
        T* c = C + i * ldc + j0;
        if (beta == T(0)) {
          SIAM_IVDEP for (index_t q = 0; q < nc; ++q) c[q] = alpha * acc[q];
        } else {
          SIAM_IVDEP for (index_t q = 0; q < nc; ++q) c[q] = alpha * acc[q] + beta * c[q];
        }
      }
    }
  }
}

#if defined(SIAM_GEMM_ONEDNN)
inline void dnnl_sgemm_checked(bool trans_a, bool trans_b, index_t m, index_t n, index_t k,
                               float alpha, const float* A, index_t lda, const float* B,
                               index_t ldb, float beta, float* C, index_t ldc) {
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, A,
                                      lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success)
    throw error("cpu gemm (oneDNN dnnl_sgemm) failed with status " + std::to_string(st) + " for " +
                std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                (st == dnnl_out_of_memory ? " (out of memory)" : ""));
}

/// The same through oneDNN (row-major, like siam). With several threads siam splits C
/// itself, into one block of rows per thread (of columns when C is wide and short), and
/// each thread runs a single-threaded dnnl_sgemm on its block: oneDNN's own threading
/// allocates a std::function per call, and siam's steady state allocates nothing. Each
/// thread then packs the whole operand that all blocks share, O(k n) work (O(k m) when
/// cutting columns) against O(m n k / threads) of arithmetic. oneDNN's packing buffers
/// come from malloc inside the library.
inline void gemm_onednn(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha,
                        const float* A, index_t lda, const float* B, index_t ldb, float beta,
                        float* C, index_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // nothing to multiply: C = beta C, without asking oneDNN about empty operands
    gemm_eigen<float>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  int threads = 1;
#if defined(_OPENMP)
  if (!omp_in_parallel()) threads = omp_get_max_threads();
#endif
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  // Too little work to share: below about 2 MFLOP a fork/join costs more than it saves.
  if (work < 1e6) threads = 1;
  if (n <= skinny_max || k <= skinny_max) {  // narrow products: siam's own kernel, rows split
    if (threads <= 1 || work < 4e6) {
      gemm_skinny<float>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
#if defined(_OPENMP)
    const index_t per = (m + threads - 1) / threads;
#pragma omp parallel num_threads(threads)
    {
      const index_t b = omp_get_thread_num() * per, e = std::min(m, b + per);
      if (b < e)
        gemm_skinny<float>(trans_a, trans_b, e - b, n, k, alpha, trans_a ? A + b : A + b * lda, lda,
                           B, ldb, beta, C + b * ldc, ldc);
    }
#endif
    return;
  }
  // C is cut along its rows (along its columns when it is wide and short) into blocks of
  // whole 16-float vectors, one per thread.
  const bool by_rows = m >= n || n < 64;
  const index_t extent = by_rows ? m : n;
  const index_t per = ((extent + threads - 1) / threads + 15) / 16 * 16;
  const int used = static_cast<int>((extent + per - 1) / per);
  if (used <= 1) {
#if defined(_OPENMP)
    // oneDNN sizes its team from omp_get_max_threads(): one thread here, restored after.
    struct OneThread {
      int before = omp_get_max_threads();
      OneThread() { omp_set_num_threads(1); }
      ~OneThread() { omp_set_num_threads(before); }
    } one;
#endif
    dnnl_sgemm_checked(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#if defined(_OPENMP)
  bool failed = false;
  std::string message;
#pragma omp parallel num_threads(used)
  {
    const index_t b = omp_get_thread_num() * per, e = std::min(extent, b + per);
    if (b < e) {
      try {
        if (by_rows)
          dnnl_sgemm_checked(trans_a, trans_b, e - b, n, k, alpha, trans_a ? A + b : A + b * lda,
                             lda, B, ldb, beta, C + b * ldc, ldc);
        else
          dnnl_sgemm_checked(trans_a, trans_b, m, e - b, k, alpha, A, lda,
                             trans_b ? B + b * ldb : B + b, ldb, beta, C + b, ldc);
      } catch (const std::exception& ex) {  // exceptions must not leave the parallel region
#pragma omp critical(siam_gemm_error)
        {
          failed = true;
          message = ex.what();
        }
      }
    }
  }
  if (failed) throw error(message);
#endif
}
#endif

/// What Cpu::gemm runs: the configured provider for float, Eigen for every other type. With
/// oneDNN, float products whose n or k is at most skinny_max run gemm_skinny instead (the
/// other providers handle those shapes well themselves; docs/benchmarks.md).
template <class T>
void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
#if defined(SIAM_GEMM_ONEDNN)
  if constexpr (std::is_same_v<T, float>) {
    gemm_onednn(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  gemm_eigen<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace siam::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
#include <string>
#include <type_traits>

#include "siam/error.hpp"
#include "siam/shape.hpp"

#if defined(SIAM_GEMM_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
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

#if defined(SIAM_GEMM_ONEDNN)
/// The same through oneDNN (row-major, like siam). oneDNN threads with the OpenMP
/// runtime siam uses, so set_num_threads governs both. Its packing buffers come from
/// malloc inside the library.
inline void gemm_onednn(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha,
                        const float* A, index_t lda, const float* B, index_t ldb, float beta,
                        float* C, index_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // nothing to multiply: C = beta C, without asking oneDNN about empty operands
    gemm_eigen<float>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, A,
                                      lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success)
    throw error("cpu gemm (oneDNN dnnl_sgemm) failed with status " + std::to_string(st) + " for " +
                std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                (st == dnnl_out_of_memory ? " (out of memory)" : ""));
}
#endif

/// What Cpu::gemm runs: the configured provider for float, Eigen for every other type.
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

// Row-major GEMM on the device: cuBLAS (gemm, in the context's matmul precision), cuBLASLt
// with a fused bias and ReLU epilogue (gemm_bias), and BF16-input products.
// Part of the CUDA runtime layer (backend/cuda_runtime.hpp, which includes every part). Host
// code only: compiles under nvcc and under a plain C++20 compiler that sees the CUDA headers.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "siam/backend/cuda_context.hpp"
#include "siam/error.hpp"

// ---------------------------------------------------------------------------------------------
// GEMM

namespace siam::detail {

/// Throws value_error for negative sizes, leading dimensions below a row's length or null
/// pointers of a non-empty product; all sizes are 64-bit.
inline void check_gemm_dims(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                            std::int64_t k, const void* A, std::int64_t lda, const void* B,
                            std::int64_t ldb, const void* C, std::int64_t ldc) {
  const auto dims = [](std::int64_t r, std::int64_t c) {
    return std::to_string(r) + " x " + std::to_string(c);
  };
  if (m < 0 || n < 0 || k < 0)
    throw value_error("gemm: negative size m=" + std::to_string(m) + " n=" + std::to_string(n) +
                      " k=" + std::to_string(k));
  // Row-major: the leading dimension is the stride between rows, at least one row's length.
  const auto check_ld = [&](const char* name, std::int64_t ld, std::int64_t rows,
                            std::int64_t cols) {
    if (ld < (cols > 1 ? cols : 1))
      throw value_error(std::string("gemm: ") + name + " is stored " + dims(rows, cols) +
                        " row-major but its leading dimension is " + std::to_string(ld));
  };
  check_ld("A", lda, trans_a ? k : m, trans_a ? m : k);
  check_ld("B", ldb, trans_b ? n : k, trans_b ? k : n);
  check_ld("C", ldc, m, n);
  if (m > 0 && n > 0 && (C == nullptr || (k > 0 && (A == nullptr || B == nullptr))))
    throw value_error("gemm: null matrix pointer for op(A) " + dims(m, k) + ", op(B) " +
                      dims(k, n));
}

// C[m x n] = beta * C for the k == 0 product, which cuBLAS's gemm is not asked to handle. As in
// BLAS, beta == 0 writes zeros without reading C (NaNs in C do not survive).
template <class T>
void scale_rows(cuda::Context& ctx, std::int64_t m, std::int64_t n, T beta, T* C,
                std::int64_t ldc) {
  if (beta == T(1)) return;
  const std::size_t row_bytes = static_cast<std::size_t>(n) * sizeof(T);
  if (beta == T(0)) {
    SIAM_CUDA_CHECK(cudaMemset2DAsync(C, static_cast<std::size_t>(ldc) * sizeof(T), 0, row_bytes,
                                      static_cast<std::size_t>(m), ctx.stream()));
    return;
  }
  const auto scal = [&](T* x, std::int64_t count) {
    if constexpr (std::is_same_v<T, float>)
      SIAM_CUBLAS_CHECK(cublasSscal_64(ctx.cublas(), count, &beta, x, 1));
    else
      SIAM_CUBLAS_CHECK(cublasDscal_64(ctx.cublas(), count, &beta, x, 1));
  };
  std::lock_guard lock(ctx.cublas_mutex());
  if (ldc == n) {
    scal(C, m * n);  // rows are contiguous: one call
  } else {
    for (std::int64_t r = 0; r < m; ++r)
      scal(C + static_cast<std::size_t>(r) * static_cast<std::size_t>(ldc), n);
  }
}

}  // namespace siam::detail

namespace siam::cuda {

/// The cuBLAS compute type of a GEMM in T under `p`: FP64 always for double; FP32 without
/// tensor cores, TF32 or BF16 tensor cores for float.
template <class T>
cublasComputeType_t compute_type(MatmulPrecision p) noexcept {
  if constexpr (!std::is_same_v<T, float>) {
    return CUBLAS_COMPUTE_64F_PEDANTIC;
  } else {
    return p == MatmulPrecision::high     ? CUBLAS_COMPUTE_32F_FAST_TF32
           : p == MatmulPrecision::medium ? CUBLAS_COMPUTE_32F_FAST_16BF
                                          : CUBLAS_COMPUTE_32F_PEDANTIC;
  }
}

/// C = alpha * op(A) * op(B) + beta * C on the current device's stream, for float and double.
/// All matrices are row-major with row strides lda/ldb/ldc; op(A) is m x k (A is stored m x k, or
/// k x m when trans_a), op(B) is k x n (stored k x n, or n x k when trans_b), C is m x n.
/// Sizes are 64-bit and go to cuBLAS's 64-bit entry point (cublasGemmEx_64), so products with a
/// dimension above 2^31 need no split. m, n or k may be 0: then nothing is launched, except that
/// k == 0 still sets C = beta * C. float runs in plain FP32 (pedantic) unless
/// set_matmul_precision() chose TF32 or BF16 tensor cores; double in FP64. Throws value_error for
/// negative sizes or leading dimensions below a row's length, cuda_error for cuBLAS failures.
/// `precision`, when given, overrides the context's for this call alone (a caller whose results
/// must be plain FP32 whatever the program chose, such as exact search).
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
          std::int64_t ldc, std::optional<MatmulPrecision> precision = std::nullopt) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "siam::cuda::gemm supports float and double");
  detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
  if (m == 0 || n == 0) return;
  Context& ctx = context();
  if (k == 0) {
    detail::scale_rows(ctx, m, n, beta, C, ldc);
    return;
  }
  constexpr bool is_float = std::is_same_v<T, float>;
  constexpr cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  std::lock_guard lock(ctx.cublas_mutex());
  const cublasComputeType_t compute = compute_type<T>(precision.value_or(ctx.matmul_precision()));
  // The one place where row-major meets cuBLAS's column-major: a row-major r x c matrix with row
  // stride ld is, byte for byte, the column-major c x r matrix X^T with leading dimension ld. So
  // row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A, n before m,
  // and keep each operand's own transpose flag.
  const auto op = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  SIAM_CUBLAS_CHECK(cublasGemmEx_64(ctx.cublas(), op(trans_b), op(trans_a), n, m, k, &alpha, B,
                                    type, ldb, A, type, lda, &beta, C, type, ldc, compute,
                                    CUBLAS_GEMM_DEFAULT));
}

/// Row-major C[m x n] (FP32) = alpha * op(A) * op(B) + beta * C where A and B are BF16
/// (CUDA_R_16BF, 2 bytes an element, e.g. FP32 inputs rounded by a kernel) and products
/// accumulate in FP32 (CUBLAS_COMPUTE_32F). Layout as in gemm(). This is how the backend runs
/// the BF16 mode: CUBLAS_COMPUTE_32F_FAST_16BF only *allows* cuBLAS to round FP32 inputs to
/// BF16, and a kernel it picks may keep TF32 instead, so the rounding is done explicitly.
inline void gemm_bf16_inputs(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                             std::int64_t k, float alpha, const void* A, std::int64_t lda,
                             const void* B, std::int64_t ldb, float beta, float* C,
                             std::int64_t ldc) {
  detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
  if (m == 0 || n == 0) return;
  Context& ctx = context();
  if (k == 0) {
    detail::scale_rows(ctx, m, n, beta, C, ldc);
    return;
  }
  std::lock_guard lock(ctx.cublas_mutex());
  const auto op = [](bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; };
  SIAM_CUBLAS_CHECK(cublasGemmEx_64(ctx.cublas(), op(trans_b), op(trans_a), n, m, k, &alpha, B,
                                    CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F,
                                    ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/// Row-major Y[m x n] = act(X[m x k] W[k x n] + 1 bias[n]) in one cuBLASLt call whose epilogue
/// adds the bias and, when `relu`, applies max(., 0) while the tile is still in registers: no
/// second pass over Y. Same precision modes as gemm(). Returns false, having done nothing, when
/// cuBLASLt offers no algorithm for this case (the caller then runs gemm() and a pass); throws
/// cuda_error when the call itself fails. Not for m, n or k of 0. In the BF16 mode (medium) it
/// always declines for float, so the caller's gemm rounds the inputs to BF16 explicitly.
template <class T>
bool gemm_bias(bool relu, std::int64_t m, std::int64_t n, std::int64_t k, const T* X,
               std::int64_t ldx, const T* W, std::int64_t ldw, const T* bias, T* Y,
               std::int64_t ldy) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "siam::cuda::gemm_bias supports float and double");
  if (m <= 0 || n <= 0 || k <= 0) return false;
  constexpr bool is_float = std::is_same_v<T, float>;
  constexpr cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  Context& ctx = context();
  if (is_float && ctx.matmul_precision() == MatmulPrecision::medium) return false;
  const cublasComputeType_t compute = compute_type<T>(ctx.matmul_precision());
  std::lock_guard lock(ctx.cublas_mutex());  // one cuBLAS(Lt) user of the context at a time
  // Column-major view, as in gemm(): Y^T [n x m] = W^T [n x k] X^T [k x m]; the bias runs along
  // Y^T's rows, which is what the BIAS epilogues broadcast (a vector of length "M" = n).
  cublasLtMatmulDesc_t d = nullptr;
  if (cublasLtMatmulDescCreate(&d, compute, type) != CUBLAS_STATUS_SUCCESS) return false;
  const detail::UniqueLtDesc desc(d);
  const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  SIAM_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  SIAM_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const auto layout = [&](std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    cublasLtMatrixLayout_t l = nullptr;
    SIAM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<std::uint64_t>(rows),
                                                 static_cast<std::uint64_t>(cols), ld));
    return detail::UniqueLtLayout(l);
  };
  const auto a = layout(n, k, ldw), b = layout(k, m, ldx), c = layout(n, m, ldy);
  // The heuristic assumes 256-byte aligned pointers unless told otherwise: tell it what these
  // pointers really allow (views into a buffer may start anywhere).
  const auto align = [](const void* ptr) {
    const auto u = reinterpret_cast<std::uintptr_t>(ptr);
    std::int64_t a = 256;
    while (a > 1 && u % static_cast<std::uintptr_t>(a) != 0)
      a /= 2;
    return a;
  };
  const Context::LtKey key{m,    n,       k,    ldx,      ldw,      ldy,
                           relu, compute, type, align(X), align(W), align(Y)};
  auto& plans = ctx.lt_plans();
  auto plan = plans.find(key);
  if (plan == plans.end()) {
    // 4 MiB of workspace at most (split-K kernels); it comes from the pool in stream order.
    constexpr std::size_t workspace_bytes = std::size_t{4} << 20;
    cublasLtMatmulPreference_t p = nullptr;
    SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    const detail::UniqueLtPreference pref(p);
    SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, std::int64_t> aligned[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key[10]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key[9]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key[11]},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key[11]}};
    for (const auto& [attr, bytes] : aligned) {
      const auto v = static_cast<std::uint32_t>(bytes);
      SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof v));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const bool ok =
        cublasLtMatmulAlgoGetHeuristic(ctx.cublas_lt(), d, a.get(), b.get(), c.get(), c.get(), p, 1,
                                       &result, &found) == CUBLAS_STATUS_SUCCESS &&
        found > 0;
    plan = plans.emplace(key, ok ? std::optional(result) : std::nullopt).first;
  }
  if (!plan->second) return false;
  const cublasLtMatmulHeuristicResult_t& result = *plan->second;
  void* workspace = result.workspaceSize ? ctx.pool().allocate(result.workspaceSize) : nullptr;
  const T one = 1, zero = 0;
  const cublasStatus_t status =
      cublasLtMatmul(ctx.cublas_lt(), d, &one, W, a.get(), X, b.get(), &zero, Y, c.get(), Y,
                     c.get(), &result.algo, workspace, result.workspaceSize, ctx.stream());
  if (workspace) ctx.pool().deallocate(workspace, result.workspaceSize);
  SIAM_CUBLAS_CHECK(status);
  return true;
}

}  // namespace siam::cuda

// What a backend provides, as C++20 concepts: the static functions and constants that
// tensors, expressions, ops, layers, losses and optimizers call (backend/cpu.hpp and
// backend/cuda.hpp are the two in the library). Tensor<T, B> and View<T, B> check
// siam::Backend<B, T> with a static_assert per group that names what is missing, so a new
// backend learns its missing function from one line instead of a template error.
//
// Optional functions are not part of the concept: the ops detect them and compose the
// operation from the required ones otherwise (gemm_bias: Dense's fused bias and ReLU;
// contrastive_forward/backward: the fused contrastive loss; mine_batch_hard: batch-hard
// mining on the device).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam {

namespace detail {
/// Stands for an expression kernel in the requirements: a trivially copyable functor
/// k(r, c) callable on the host and the device.
template <class T>
struct KernelArchetype {
  SIAM_HD T operator()(index_t, index_t) const { return T(0); }
};
/// Stands for a group of fused assignments (tensor.hpp's FusedGroup).
struct FusedGroupArchetype {};
}  // namespace detail

/// Identity: `is_host` (a constexpr bool: whether pointers are host memory), `name` (for
/// messages) and `StepGraph` (what a trainer captures and replays a step with; the host's
/// is detail::ReplayGraph, backend/step_graph.hpp).
template <class B>
concept BackendTraits = requires {
  { B::is_host } -> std::convertible_to<bool>;
  { B::name } -> std::convertible_to<const char*>;
  typename B::StepGraph;
};

/// Memory: allocate<T>(n) / deallocate<T>(p, n), copy (backend to backend), to_host,
/// from_host, synchronize().
template <class B, class T>
concept BackendMemory = requires(T* p, const T* cp, index_t n) {
  { B::template allocate<T>(n) } -> std::same_as<T*>;
  B::template deallocate<T>(p, n);
  B::copy(p, cp, n);
  B::to_host(p, cp, n);
  B::from_host(p, cp, n);
  B::synchronize();
};

/// Kernel evaluation, each in one pass: assign (dst[r, c] = k(r, c)), assign_fused (several
/// (dst, kernel) pairs per index) and assign_fused_batch, sum_rows / sum_cols / sum_all (with
/// an accumulate flag), assign_sum_rows (assign and row totals at once), max_cols.
template <class B, class T>
concept BackendKernels = requires(T* p, index_t n, detail::KernelArchetype<T> k, bool acc,
                                  const detail::FusedGroupArchetype* groups) {
  B::assign(p, n, n, k);
  B::template assign_fused<T>(n, std::pair{p, k});
  B::template assign_fused_batch<T>(groups, std::size_t{1});
  B::sum_rows(p, n, n, k, acc);
  B::assign_sum_rows(p, p, n, n, k, acc);
  B::sum_cols(p, n, n, k, acc);
  B::sum_all(p, n, n, k, acc);
  B::max_cols(p, n, n, k);
};

/// Linear algebra and row movement: gemm (BLAS's, row-major), gather_rows and
/// scatter_add_rows (host indices).
template <class B, class T>
concept BackendLinearAlgebra = requires(T* p, const T* cp, const std::uint32_t* idx, index_t n, T a,
                                        bool t) {
  B::gemm(t, t, n, n, n, a, cp, n, cp, n, a, p, n);
  B::gather_rows(p, cp, idx, n, n);
  B::scatter_add_rows(p, cp, idx, n, n);
};

/// Everything a backend provides for scalar type T.
template <class B, class T = float>
concept Backend =
    BackendTraits<B> && BackendMemory<B, T> && BackendKernels<B, T> && BackendLinearAlgebra<B, T>;

namespace detail {
/// The check Tensor and View run: one message per missing group (the first one fails the
/// build; the concept's name and the group say what to add).
template <class B, class T>
constexpr bool check_backend() {
  static_assert(BackendTraits<B>,
                "siam: not a Backend: it lacks is_host, name or StepGraph (siam::BackendTraits, "
                "siam/backend_concept.hpp)");
  static_assert(BackendMemory<B, T>,
                "siam: not a Backend: it lacks allocate, deallocate, copy, to_host, from_host or "
                "synchronize (siam::BackendMemory, siam/backend_concept.hpp)");
  static_assert(BackendKernels<B, T>,
                "siam: not a Backend: it lacks assign, assign_fused, assign_fused_batch, "
                "sum_rows, assign_sum_rows, sum_cols, sum_all or max_cols "
                "(siam::BackendKernels, siam/backend_concept.hpp)");
  static_assert(BackendLinearAlgebra<B, T>,
                "siam: not a Backend: it lacks gemm, gather_rows or scatter_add_rows "
                "(siam::BackendLinearAlgebra, siam/backend_concept.hpp)");
  return true;
}
}  // namespace detail

}  // namespace siam

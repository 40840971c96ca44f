// Fork/join over OpenMP threads for the host engines (backend/cpu.hpp, conv_host.hpp,
// conv_dnnl.hpp): one definition of how a loop of independent tasks is split. Without
// OpenMP every loop runs in order on the calling thread.
#pragma once

#include <algorithm>

#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace siam::detail {

// Tasks per portion of a dynamically scheduled loop of n tasks: about 8 portions per thread,
// so that a thread slowed down (by another process, or by a heavier task) leaves its share to
// the others instead of making them wait at the join. Every task writes its own outputs, so
// which thread takes which portion changes no result.
inline index_t portion_size([[maybe_unused]] index_t n) {
#if defined(_OPENMP)
  const index_t portions = 8 * static_cast<index_t>(omp_get_max_threads());
  return std::max<index_t>(1, n / portions);
#else
  return n;
#endif
}

// Runs body(0..n-1), split over OpenMP threads when `parallel` and n > 1, in portions taken
// from a shared counter (portion_size). The branch is in C++: an OpenMP region with a false
// if-clause still costs a fork/join.
template <class F>
void parallel_for(index_t n, [[maybe_unused]] bool parallel, const F& body) {
#if defined(_OPENMP)
  if (parallel && n > 1) {
    const index_t portion = portion_size(n);
    SIAM_OMP(parallel for schedule(dynamic, portion))
    for (index_t i = 0; i < n; ++i)
      body(i);
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i)
    body(i);
}

// first(0..n1-1), then, once every thread is done with it, then(0..n2-1): two phases in one
// fork/join.
template <class F, class G>
void parallel_for_then(index_t n1, index_t n2, [[maybe_unused]] bool parallel, const F& first,
                       const G& then) {
#if defined(_OPENMP)
  if (parallel && (n1 > 1 || n2 > 1)) {
    SIAM_OMP(parallel) {
      SIAM_OMP(for schedule(static))
      for (index_t i = 0; i < n1; ++i)
        first(i);
      SIAM_OMP(for schedule(static))
      for (index_t i = 0; i < n2; ++i)
        then(i);
    }
    return;
  }
#endif
  for (index_t i = 0; i < n1; ++i)
    first(i);
  for (index_t i = 0; i < n2; ++i)
    then(i);
}

}  // namespace siam::detail

// Fork/join over OpenMP threads for the host engines (backend/cpu.hpp, conv_host.hpp,
// conv_dnnl.hpp): one definition of how a loop of independent tasks is split. Without
// OpenMP every loop runs in order on the calling thread.
#pragma once

#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam::detail {

// Runs body(0..n-1), split over OpenMP threads when `parallel` and n > 1. The branch is in
// C++: an OpenMP region with a false if-clause still costs a fork/join.
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

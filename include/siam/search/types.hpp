// The vocabulary shared by siam's search engines (exact.hpp, hnsw.hpp) and the metrics
// over them (accuracy.hpp): the metric, a view of embeddings, a result, argument checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "siam/detail/config.hpp"
#include "siam/error.hpp"
#include "siam/shape.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace siam::search {

/// What "nearest" means. l2: smallest squared Euclidean distance (reported as the squared
/// distance). inner_product: largest dot product (reported as the dot product, nearest
/// first; use it on L2-normalised embeddings for cosine similarity).
enum class Metric : std::uint32_t { l2 = 1, inner_product = 2 };

inline const char* to_string(Metric m) {
  return m == Metric::l2 ? "l2" : m == Metric::inner_product ? "inner_product" : "unknown";
}

/// A read-only view of `count` row-major embeddings of `dim` floats each.
struct Rows {
  const float* data = nullptr;
  index_t count = 0;
  index_t dim = 0;
  const float* row(index_t i) const { return data + i * dim; }
};

/// The k nearest gallery rows of each query, nearest first: row-major queries x k.
struct Result {
  index_t queries = 0;
  index_t k = 0;
  std::vector<std::int64_t> indices;
  std::vector<float> distances;
  std::int64_t index(index_t q, index_t r) const {
    return indices[static_cast<std::size_t>(q * k + r)];
  }
  float distance(index_t q, index_t r) const {
    return distances[static_cast<std::size_t>(q * k + r)];
  }
};

namespace detail {

inline void check_rows(const char* op, const char* what, const Rows& r) {
  if (r.count < 0 || r.dim <= 0)
    throw value_error(std::string(op) + ": " + what + " has " + std::to_string(r.count) +
                      " rows of dim " + std::to_string(r.dim) + " (need rows >= 0, dim > 0)");
  if (r.count > 0 && r.data == nullptr)
    throw value_error(std::string(op) + ": " + what + " is null");
}

/// Throws numeric_error naming the first non-finite value of `r`.
inline void check_finite(const char* op, const char* what, const Rows& r) {
  const index_t n = r.count * r.dim;
  bool bad = false;
  SIAM_OMP(parallel for reduction(|| : bad) if (n > (1 << 20)))
  for (index_t i = 0; i < n; ++i)
    bad = bad || !std::isfinite(r.data[i]);
  if (!bad) return;
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(r.data[i]))
      throw numeric_error(std::string(op) + ": " + what + " row " + std::to_string(i / r.dim) +
                          " column " + std::to_string(i % r.dim) + " is " +
                          std::to_string(r.data[i]) + ", not finite");
}

inline int thread_count(int requested) {
#if defined(_OPENMP)
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

}  // namespace detail

}  // namespace siam::search

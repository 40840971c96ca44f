// Evaluation of an embedding: k-nearest-neighbour accuracy, precision@k, retrieval
// and contrastive-pair statistics. Embeddings are plain row-major float arrays
// (n rows of dim values), labels one int64 per row (any values, e.g. thousands of
// classes), so the metrics can run on any
// model's output. Distances are Euclidean, accumulated in double. Neighbours are
// ordered by (distance, index), so results never depend on the sort algorithm or
// the number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "siam/error.hpp"

namespace siam::metrics {

namespace detail {

struct Neighbour {
  double d2;
  std::uint32_t index;
  bool operator<(const Neighbour& o) const { return d2 < o.d2 || (d2 == o.d2 && index < o.index); }
};

inline double sq_dist(const float* a, const float* b, std::size_t dim) {
  double s = 0.0;
  for (std::size_t j = 0; j < dim; ++j) {
    const double t = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s += t * t;
  }
  return s;
}

// The k nearest rows of emb (n x dim) to q, skipping row `skip` (n for none), sorted
// into buf[0, k). buf is scratch owned by the caller (reused across queries).
inline void k_nearest(const float* q, const float* emb, std::size_t n, std::size_t dim,
                      std::size_t k, std::size_t skip, std::vector<Neighbour>& buf) {
  buf.clear();
  for (std::size_t i = 0; i < n; ++i)
    if (i != skip) buf.push_back({sq_dist(q, emb + i * dim, dim), static_cast<std::uint32_t>(i)});
  const auto kk = static_cast<std::ptrdiff_t>(k);
  if (k < buf.size()) std::nth_element(buf.begin(), buf.begin() + kk, buf.end());
  std::sort(buf.begin(), buf.begin() + kk);
}

// Shared argument checks; finiteness matters because NaN breaks the neighbour order.
inline void check_embedding(const char* op, const char* what, const float* emb, std::size_t n,
                            std::size_t dim) {
  if (dim == 0) throw value_error(std::string(op) + ": dim must be > 0");
  if (n == 0) throw value_error(std::string(op) + ": " + what + " has no rows");
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw value_error(std::string(op) + ": " + std::to_string(n) + " rows exceed 32-bit indices");
  if (emb == nullptr) throw value_error(std::string(op) + ": " + what + " is null");
  for (std::size_t i = 0; i < n * dim; ++i)
    if (!std::isfinite(emb[i]))
      throw numeric_error(std::string(op) + ": " + what + " row " + std::to_string(i / dim) +
                          " column " + std::to_string(i % dim) + " is not finite");
}

inline void check_labels(const char* op, const char* what, const std::int64_t* labels) {
  if (labels == nullptr) throw value_error(std::string(op) + ": " + what + " is null");
}

inline void check_k(const char* op, std::size_t k, std::size_t available, const char* of) {
  if (k == 0 || k > available)
    throw value_error(std::string(op) + ": k = " + std::to_string(k) + " must be in [1, " +
                      std::to_string(available) + "] (" + of + ")");
}

}  // namespace detail

/// Fraction of the n_test test rows whose label equals the majority label of their k
/// nearest training rows (all embeddings dim wide, row-major). A tie in votes goes to
/// the label whose voters have the smallest summed distance, then to the smallest
/// label. O(n_train * n_test * dim), parallel over test rows with OpenMP.
/// Throws value_error for zero sizes, null pointers, k outside [1, n_train];
/// numeric_error for a non-finite embedding value.
inline double knn_accuracy(const float* train_emb, const std::int64_t* train_labels,
                           std::size_t n_train, const float* test_emb,
                           const std::int64_t* test_labels, std::size_t n_test, std::size_t dim,
                           std::size_t k) {
  constexpr const char* op = "knn_accuracy";
  detail::check_embedding(op, "train_emb", train_emb, n_train, dim);
  detail::check_embedding(op, "test_emb", test_emb, n_test, dim);
  detail::check_labels(op, "train_labels", train_labels);
  detail::check_labels(op, "test_labels", test_labels);
  detail::check_k(op, k, n_train, "the number of training rows");

  std::vector<std::uint8_t> correct(n_test, 0);
  const auto count = static_cast<std::ptrdiff_t>(n_test);
#if defined(_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<detail::Neighbour> buf;
    buf.reserve(n_train);
    std::vector<std::pair<std::int64_t, double>> voters;  // (label, distance) of each neighbour
    voters.reserve(k);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::ptrdiff_t t = 0; t < count; ++t) {
      const auto ti = static_cast<std::size_t>(t);
      detail::k_nearest(test_emb + ti * dim, train_emb, n_train, dim, k, n_train, buf);
      voters.clear();
      for (std::size_t r = 0; r < k; ++r)
        voters.emplace_back(train_labels[buf[r].index], std::sqrt(buf[r].d2));
      // Group by label; stable, so each label's distances are summed in neighbour order.
      std::stable_sort(voters.begin(), voters.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      std::int64_t best = voters[0].first;
      std::size_t best_votes = 0;
      double best_dist = 0.0;
      for (std::size_t r = 0; r < k;) {
        const std::int64_t l = voters[r].first;
        std::size_t votes = 0;
        double dist = 0.0;
        for (; r < k && voters[r].first == l; ++r, ++votes)
          dist += voters[r].second;
        if (votes > best_votes || (votes == best_votes && dist < best_dist)) {
          best = l;  // scanning upwards keeps the smaller label on a full tie
          best_votes = votes;
          best_dist = dist;
        }
      }
      correct[ti] = best == test_labels[ti] ? 1 : 0;
    }
  }
  std::size_t hits = 0;
  for (const std::uint8_t c : correct)
    hits += c;
  return static_cast<double>(hits) / static_cast<double>(n_test);
}

/// Mean over all n rows of the fraction of the row's k nearest other rows (itself
/// excluded) that share its label.
/// Throws value_error for n == 0, null pointers, dim == 0, k outside [1, n - 1];
/// numeric_error for a non-finite embedding value.
inline double precision_at_k(const float* emb, const std::int64_t* labels, std::size_t n,
                             std::size_t dim, std::size_t k) {
  constexpr const char* op = "precision_at_k";
  detail::check_embedding(op, "emb", emb, n, dim);
  detail::check_labels(op, "labels", labels);
  detail::check_k(op, k, n - 1, "the number of other rows");

  std::vector<double> frac(n, 0.0);
  const auto count = static_cast<std::ptrdiff_t>(n);
#if defined(_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<detail::Neighbour> buf;
    buf.reserve(n);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::ptrdiff_t q = 0; q < count; ++q) {
      const auto qi = static_cast<std::size_t>(q);
      detail::k_nearest(emb + qi * dim, emb, n, dim, k, qi, buf);
      std::size_t same = 0;
      for (std::size_t r = 0; r < k; ++r)
        same += labels[buf[r].index] == labels[qi] ? 1 : 0;
      frac[qi] = static_cast<double>(same) / static_cast<double>(k);
    }
  }
  double sum = 0.0;
  for (const double f : frac)
    sum += f;  // serial: the same sum for any thread count
  return sum / static_cast<double>(n);
}

/// The k rows nearest to a query row and their Euclidean distances to it (accumulated in
/// double), nearest first.
struct Neighbours {
  std::vector<std::uint32_t> indices;
  std::vector<double> distances;
};

/// The k rows nearest to row query_index with their distances, nearest first (equal
/// distances: smaller index first). With exclude_query the query row itself is left out;
/// without it, it is normally the first result.
/// Throws value_error for n == 0, null emb, dim == 0, query_index >= n, k outside
/// [1, n - exclude_query]; numeric_error for a non-finite embedding value.
inline Neighbours nearest_with_distances(const float* emb, std::size_t n, std::size_t dim,
                                         std::size_t query_index, std::size_t k,
                                         bool exclude_query = true) {
  constexpr const char* op = "nearest";
  detail::check_embedding(op, "emb", emb, n, dim);
  if (query_index >= n)
    throw value_error(std::string(op) + ": query_index " + std::to_string(query_index) +
                      " is not below n = " + std::to_string(n));
  detail::check_k(op, k, exclude_query ? n - 1 : n,
                  exclude_query ? "the rows other than the query" : "the number of rows");
  std::vector<detail::Neighbour> buf;
  buf.reserve(n);
  detail::k_nearest(emb + query_index * dim, emb, n, dim, k, exclude_query ? query_index : n, buf);
  Neighbours out;
  out.indices.resize(k);
  out.distances.resize(k);
  for (std::size_t r = 0; r < k; ++r) {
    out.indices[r] = buf[r].index;
    out.distances[r] = std::sqrt(buf[r].d2);
  }
  return out;
}

/// The indices of nearest_with_distances (same order, same errors).
inline std::vector<std::uint32_t> nearest(const float* emb, std::size_t n, std::size_t dim,
                                          std::size_t query_index, std::size_t k,
                                          bool exclude_query = true) {
  return nearest_with_distances(emb, n, dim, query_index, k, exclude_query).indices;
}

/// Contrastive-loss statistics over labelled pairs of embedding rows.
struct PairStats {
  double mean_loss = 0.0;                 // mean of 0.5 [y d^2 + (1 - y) max(margin - d, 0)^2]
  double mean_similar_distance = 0.0;     // mean d over pairs with y = 1 (NaN if none)
  double mean_dissimilar_distance = 0.0;  // mean d over pairs with y = 0 (NaN if none)
  double dissimilar_beyond_margin = 0.0;  // fraction of y = 0 pairs with d >= margin (NaN if none)
  std::size_t n_pairs = 0;
};

/// For pairs (first[p], second[p]) of rows of emb (n x dim) with y = similar[p] in
/// {0, 1}: d = sqrt(sum_j (a_j - b_j)^2 + 1e-6) (the 1e-6 keeps d differentiable at
/// 0, as in training) and the statistics of PairStats. labels may be null; when
/// given, every pair's y must equal [labels[first] == labels[second]].
/// Throws shape_error if first, second, similar differ in length; value_error for no
/// pairs, an index >= n, y not 0 or 1, a y that contradicts labels, margin not > 0,
/// dim == 0 or null emb. Non-finite embeddings propagate as NaN.
inline PairStats pair_stats(const float* emb, const std::int64_t* labels, std::size_t n,
                            std::size_t dim, const std::vector<std::uint32_t>& first,
                            const std::vector<std::uint32_t>& second,
                            const std::vector<float>& similar, double margin) {
  const std::string op = "pair_stats";
  if (first.size() != second.size() || first.size() != similar.size())
    throw shape_error(op + ": first (" + std::to_string(first.size()) + "), second (" +
                      std::to_string(second.size()) + ") and similar (" +
                      std::to_string(similar.size()) + ") must have the same length");
  if (first.empty()) throw value_error(op + ": no pairs");
  if (dim == 0 || emb == nullptr || n == 0)
    throw value_error(op + ": need a non-null embedding with n > 0 rows and dim > 0 (n = " +
                      std::to_string(n) + ", dim = " + std::to_string(dim) + ")");
  if (!(margin > 0.0) || !std::isfinite(margin))
    throw value_error(op + ": margin " + std::to_string(margin) + " must be finite and > 0");

  PairStats st;
  st.n_pairs = first.size();
  double loss = 0.0, dsim = 0.0, ddis = 0.0;
  std::size_t nsim = 0, ndis = 0, beyond = 0;
  for (std::size_t p = 0; p < first.size(); ++p) {
    const std::uint32_t a = first[p], b = second[p];
    if (a >= n || b >= n)
      throw value_error(op + ": pair " + std::to_string(p) + " = (" + std::to_string(a) + ", " +
                        std::to_string(b) + ") indexes past n = " + std::to_string(n));
    const float y = similar[p];
    if (y != 0.0f && y != 1.0f)
      throw value_error(op + ": similar[" + std::to_string(p) + "] = " + std::to_string(y) +
                        " is not 0 or 1");
    if (labels != nullptr && (labels[a] == labels[b]) != (y == 1.0f))
      throw value_error(op + ": pair " + std::to_string(p) + " has labels " +
                        std::to_string(labels[a]) + " and " + std::to_string(labels[b]) +
                        " but similar = " + std::to_string(y));
    const double d = std::sqrt(detail::sq_dist(emb + a * dim, emb + b * dim, dim) + 1e-6);
    if (y == 1.0f) {
      loss += 0.5 * d * d;
      dsim += d;
      ++nsim;
    } else {
      const double gap = std::max(margin - d, 0.0);
      loss += 0.5 * gap * gap;
      ddis += d;
      ++ndis;
      if (d >= margin) ++beyond;
    }
  }
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  st.mean_loss = loss / static_cast<double>(st.n_pairs);
  st.mean_similar_distance = nsim ? dsim / static_cast<double>(nsim) : nan;
  st.mean_dissimilar_distance = ndis ? ddis / static_cast<double>(ndis) : nan;
  st.dissimilar_beyond_margin =
      ndis ? static_cast<double>(beyond) / static_cast<double>(ndis) : nan;
  return st;
}

}  // namespace siam::metrics

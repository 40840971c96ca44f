// Retrieval metrics of an embedding, as the metric-learning literature reports them
// (Musgrave et al., "A Metric Learning Reality Check", 2020) and as pytorch-metric-
// learning's AccuracyCalculator computes them, over an exact blocked search
// (search/exact.hpp): no query x reference matrix is ever held.
//
// For a query q with label y, let R = the number of reference rows labelled y (less q itself
// when the queries are the reference set), and let rel(i) = 1 when q's i-th nearest
// reference row (i = 1, 2, ...) is labelled y.
//   precision@1   = rel(1)
//   R-precision   = (1/R) sum_{i<=R} rel(i)
//   MAP@R         = (1/R) sum_{i<=R} rel(i) * P(i),   P(i) = (1/i) sum_{j<=i} rel(j)
//   Recall@K      = 1 if some rel(i) = 1 for i <= K, else 0
// Each metric is the mean over the queries with R > 0; a query whose label has no other
// reference row ("lone" in pytorch-metric-learning) is left out of every mean (so Recall@1
// equals precision@1), and every metric is 0 when all queries are lone.
// Neighbours are ordered by (distance, reference index): ties go to the smaller index.
// Two differences from pytorch-metric-learning, both where its answer depends on FAISS
// rather than on the definition: it caps the neighbours retrieved at 1023 (R is cut
// there), and with one set it drops the first neighbour as the query itself even when a
// duplicate point comes first; here R is never capped and the query's own row is excluded
// by index.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "siam/error.hpp"
#include "siam/search/exact.hpp"

namespace siam::search {

struct AccuracyOptions {
  /// The K of Recall@K (each in [1, reference rows], less one with one set).
  std::vector<index_t> recall_at = {1, 2, 4, 8};
  Metric metric = Metric::l2;
  int threads = 0;
  /// Bytes the candidate lists of one chunk of queries may take (memory beyond the inputs
  /// stays within about this plus one cache tile per thread).
  std::size_t chunk_bytes = std::size_t{64} << 20;
};

struct Accuracy {
  double precision_at_1 = 0;
  double r_precision = 0;
  double map_at_r = 0;
  std::vector<std::pair<index_t, double>> recall_at_k;  // (K, Recall@K), in the order asked
  index_t queries = 0;                                  // queries scored (R > 0)
  index_t lone_queries = 0;                             // queries left out (R == 0)
};

namespace detail {

inline Accuracy accuracy_impl(const Rows& queries, const std::int64_t* query_labels,
                              const Rows& reference, const std::int64_t* reference_labels,
                              bool same_set, const AccuracyOptions& opt) {
  constexpr const char* op = "search::accuracy";
  check_rows(op, "queries", queries);
  check_rows(op, "reference", reference);
  if (queries.dim != reference.dim)
    throw shape_error(std::string(op) + ": queries have dim " + std::to_string(queries.dim) +
                      ", the reference set " + std::to_string(reference.dim));
  if (queries.count == 0) throw value_error(std::string(op) + ": no queries");
  if (query_labels == nullptr || reference_labels == nullptr)
    throw value_error(std::string(op) + ": labels are null");
  const index_t available = reference.count - (same_set ? 1 : 0);
  index_t k_recall = 1;
  for (const index_t K : opt.recall_at) {
    if (K < 1 || K > available)
      throw value_error(std::string(op) + ": Recall@K with K = " + std::to_string(K) +
                        " must have K in [1, " + std::to_string(available) +
                        "] (the reference rows" + (same_set ? ", less the query itself)" : ")"));
    k_recall = std::max(k_recall, K);
  }
  // R per label: sort the reference labels once, then binary-search each query's.
  std::vector<std::int64_t> sorted(reference_labels, reference_labels + reference.count);
  std::sort(sorted.begin(), sorted.end());
  auto relevant = [&](std::int64_t y) {
    const auto [lo, hi] = std::equal_range(sorted.begin(), sorted.end(), y);
    return static_cast<index_t>(hi - lo) - (same_set ? 1 : 0);
  };
  std::vector<index_t> R(static_cast<std::size_t>(queries.count));
  for (index_t i = 0; i < queries.count; ++i)
    R[static_cast<std::size_t>(i)] = relevant(query_labels[i]);

  Accuracy acc;
  std::vector<double> recall_hits(opt.recall_at.size(), 0.0);
  double p1 = 0, rp = 0, map = 0;
  // Queries in chunks, each searched for as many neighbours as its largest R needs.
  index_t k_max = k_recall;
  for (const index_t r : R)
    k_max = std::max(k_max, r);
  const auto per_query = static_cast<std::size_t>(k_max) * 3 * sizeof(Neighbour);
  const index_t chunk = std::max<index_t>(
      1, static_cast<index_t>(opt.chunk_bytes / std::max<std::size_t>(per_query, 1)));
  std::vector<Neighbour> nb;
  for (index_t c0 = 0; c0 < queries.count; c0 += chunk) {
    const index_t c1 = std::min(queries.count, c0 + chunk);
    index_t k = k_recall;
    for (index_t i = c0; i < c1; ++i)
      k = std::max(k, R[static_cast<std::size_t>(i)]);
    nb.resize(static_cast<std::size_t>((c1 - c0) * k));
    Options so;
    so.exclude_self = same_set;
    so.self_offset = c0;
    so.threads = opt.threads;
    knn_into(Rows{queries.row(c0), c1 - c0, queries.dim}, reference, k, opt.metric, so, nb.data());
    for (index_t i = c0; i < c1; ++i) {
      const index_t r = R[static_cast<std::size_t>(i)];
      if (r <= 0) {
        ++acc.lone_queries;
        continue;
      }
      const std::int64_t y = query_labels[i];
      const Neighbour* row = nb.data() + (i - c0) * k;
      auto rel = [&](index_t j) { return reference_labels[row[j].index] == y; };
      p1 += rel(0) ? 1.0 : 0.0;
      index_t hits = 0;
      double ap = 0;
      for (index_t j = 0; j < r; ++j)
        if (rel(j)) {
          ++hits;
          ap += static_cast<double>(hits) / static_cast<double>(j + 1);
        }
      rp += static_cast<double>(hits) / static_cast<double>(r);
      map += ap / static_cast<double>(r);
      for (std::size_t t = 0; t < opt.recall_at.size(); ++t) {
        const index_t K = opt.recall_at[t];
        for (index_t j = 0; j < K; ++j)
          if (rel(j)) {
            recall_hits[t] += 1.0;
            break;
          }
      }
      ++acc.queries;
    }
  }
  const double n = acc.queries > 0 ? static_cast<double>(acc.queries) : 1.0;
  acc.precision_at_1 = p1 / n;
  acc.r_precision = rp / n;
  acc.map_at_r = map / n;
  for (std::size_t t = 0; t < opt.recall_at.size(); ++t)
    acc.recall_at_k.emplace_back(opt.recall_at[t], recall_hits[t] / n);
  return acc;
}

}  // namespace detail

/// Metrics of `queries` (labels query_labels, one per row) retrieving from a separate
/// `reference` set (labels reference_labels). Throws shape_error when the dims differ;
/// value_error for no queries, null labels or a Recall K outside [1, reference rows];
/// numeric_error for a NaN or infinite embedding value.
[[nodiscard]] inline Accuracy accuracy(const Rows& queries, const std::int64_t* query_labels,
                                       const Rows& reference, const std::int64_t* reference_labels,
                                       const AccuracyOptions& opt = {}) {
  return detail::accuracy_impl(queries, query_labels, reference, reference_labels, false, opt);
}

/// Metrics of one set retrieving from itself, each query's own row excluded (Recall K in
/// [1, rows - 1]).
[[nodiscard]] inline Accuracy accuracy(const Rows& embeddings, const std::int64_t* labels,
                                       const AccuracyOptions& opt = {}) {
  return detail::accuracy_impl(embeddings, labels, embeddings, labels, true, opt);
}

}  // namespace siam::search

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
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "siam/error.hpp"
#include "siam/search/exact.hpp"

namespace siam::search {

/// How the neighbours are ranked: `top_k` keeps a k-entry list per query during the blocked
/// search (best for small R); `full_rows` computes each query's whole distance row a few
/// queries at a time and ranks only its nearest R by a bucket pass and a radix sort (best
/// when R is in the hundreds or thousands: a class of 6,000 in 60,000). Both give the same
/// metrics; `automatic` picks full_rows when some query needs more than 64 neighbours.
enum class AccuracyMethod { automatic, top_k, full_rows };

struct AccuracyOptions {
  /// The K of Recall@K (each in [1, reference rows], less one with one set).
  std::vector<index_t> recall_at = {1, 2, 4, 8};
  Metric metric = Metric::l2;
  int threads = 0;
  /// Bytes the candidate lists of one chunk of queries may take (memory beyond the inputs
  /// stays within about this plus one cache tile per thread).
  std::size_t chunk_bytes = std::size_t{64} << 20;
  AccuracyMethod method = AccuracyMethod::automatic;
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

// The metrics of one query from its neighbours' relevance, nearest first (rel(j), j < need).
struct QueryScore {
  double p1 = 0, rp = 0, ap = 0;
};

template <class Rel>
QueryScore score_query(index_t r, const Rel& rel, const std::vector<index_t>& recall_at,
                       unsigned char* recall_hit) {
  QueryScore s;
  s.p1 = rel(0) ? 1.0 : 0.0;
  index_t hits = 0;
  for (index_t j = 0; j < r; ++j)
    if (rel(j)) {
      ++hits;
      s.ap += static_cast<double>(hits) / static_cast<double>(j + 1);
    }
  s.rp = static_cast<double>(hits) / static_cast<double>(r);
  s.ap /= static_cast<double>(r);
  for (std::size_t t = 0; t < recall_at.size(); ++t) {
    recall_hit[t] = 0;
    for (index_t j = 0; j < recall_at[t]; ++j)
      if (rel(j)) {
        recall_hit[t] = 1;
        break;
      }
  }
  return s;
}

// A float's bits as an unsigned key in the float's order (-0 must be made +0 first).
inline std::uint32_t order_key(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u ^ ((u >> 31) != 0 ? 0xFFFFFFFFu : 0x80000000u);
}

// Per-thread scratch of the full-rows ranking.
struct RowScratch {
  std::vector<float> tile;
  std::vector<std::uint16_t> bucket;
  std::vector<std::uint32_t> count;
  std::vector<std::uint32_t> key, key2;
  std::vector<std::int64_t> idx, idx2;
};

// Ranks the `need` nearest entries of one distance row d[0, n) (entry `self` left out;
// lo and hi its smallest and largest distance) by (distance, index) into s.idx[0, need): a
// bucket histogram finds the distance bucket that holds the need-th entry, the entries up to
// it are gathered in index order and sorted by a stable radix sort on the distance's bits
// (so equal distances stay in index order).
inline void rank_row(const float* d, index_t n, index_t self, index_t need, float lo, float hi,
                     RowScratch& s) {
  constexpr index_t buckets = 4096;
  const float span = hi - lo;
  const float scale =
      span > 0 && std::isfinite(span) ? static_cast<float>(buckets - 1) / span : 0.0f;
  s.bucket.resize(static_cast<std::size_t>(n));
  std::uint16_t* bk = s.bucket.data();
  // (v - lo) * scale is non-decreasing in v, so the buckets keep the distances' order.
  if (scale == 0.0f) {  // one distance, or a span beyond float's range: one bucket
    std::fill(bk, bk + n, std::uint16_t{0});
  } else {
    SIAM_OMP(simd)
    for (index_t j = 0; j < n; ++j)
      bk[j] = static_cast<std::uint16_t>(
          std::clamp((d[j] - lo) * scale, 0.0f, static_cast<float>(buckets - 1)));
  }
  s.count.assign(static_cast<std::size_t>(buckets), 0);
  for (index_t j = 0; j < n; ++j)
    ++s.count[bk[j]];
  if (self >= 0) --s.count[bk[self]];
  index_t last = 0;
  for (index_t seen = 0; last < buckets; ++last) {
    seen += s.count[static_cast<std::size_t>(last)];
    if (seen >= need) break;
  }
  s.key.clear();
  s.idx.clear();
  for (index_t j = 0; j < n; ++j)
    if (bk[j] <= last && j != self) {
      s.key.push_back(order_key(d[j]));
      s.idx.push_back(j);
    }
  const std::size_t m = s.key.size();
  s.key2.resize(m);
  s.idx2.resize(m);
  constexpr int bits = 11;
  constexpr std::uint32_t mask = (1u << bits) - 1;
  std::uint32_t hist[1u << bits];
  for (int shift = 0; shift < 32; shift += bits) {
    std::fill(hist, hist + (1u << bits), 0u);
    for (std::size_t i = 0; i < m; ++i)
      ++hist[(s.key[i] >> shift) & mask];
    if (m == 0 || hist[(s.key[0] >> shift) & mask] == m) continue;  // one digit: in order
    std::uint32_t run = 0;
    for (auto& h : hist) {
      const std::uint32_t c = h;
      h = run;
      run += c;
    }
    for (std::size_t i = 0; i < m; ++i) {
      const std::uint32_t at = hist[(s.key[i] >> shift) & mask]++;
      s.key2[at] = s.key[i];
      s.idx2[at] = s.idx[i];
    }
    s.key.swap(s.key2);
    s.idx.swap(s.idx2);
  }
}

// The full-rows method: blocks of a few queries times the whole reference set by one GEMM,
// then each row ranked by rank_row. Memory: one block of rows per thread (at most
// chunk_bytes in all) plus the gathered candidates.
inline void score_full_rows(const Rows& Q, const std::int64_t* ql, const Rows& G,
                            const std::int64_t* gl, bool same_set, const std::vector<index_t>& R,
                            index_t k_recall, const AccuracyOptions& opt,
                            std::vector<QueryScore>& score,
                            std::vector<unsigned char>& recall_hit) {
  constexpr const char* op = "search::accuracy";
  check_finite(op, "queries", Q);
  check_finite(op, "reference", G);
  const auto qn = squared_norms(op, "queries", Q);
  const auto gn = squared_norms(op, "reference", G);
  if (opt.metric != Metric::l2 && opt.metric != Metric::inner_product)
    throw value_error(std::string(op) + ": unknown metric " +
                      std::to_string(static_cast<std::uint32_t>(opt.metric)));
  const bool l2 = opt.metric == Metric::l2;
  const index_t n = G.count, d = Q.dim, nq = Q.count;
  const int threads = thread_count(opt.threads);
  const std::size_t row_bytes = static_cast<std::size_t>(n) * sizeof(float);
  const index_t qb = std::clamp<index_t>(
      static_cast<index_t>(opt.chunk_bytes / (row_bytes * static_cast<std::size_t>(threads))), 1,
      16);
  const index_t blocks = (nq + qb - 1) / qb;
  const std::size_t nk = opt.recall_at.size();
  bool failed = false;
  std::string message;
  SIAM_OMP(parallel num_threads(threads) if (blocks > 1)) {
    RowScratch s;
    SIAM_OMP(for schedule(dynamic, 1))
    for (index_t b = 0; b < blocks; ++b) {
      try {
        const index_t q0 = b * qb, mb = std::min(qb, nq - q0);
        s.tile.resize(static_cast<std::size_t>(mb * n));
        siam::detail::gemm<float>(false, true, mb, n, d, l2 ? -2.0f : -1.0f, Q.row(q0), d, G.row(0),
                                  d, 0.0f, s.tile.data(), n);
        for (index_t i = q0; i < q0 + mb; ++i) {
          const index_t r = R[static_cast<std::size_t>(i)];
          if (r <= 0) continue;
          float* t = s.tile.data() + (i - q0) * n;
          const float base = l2 ? qn[static_cast<std::size_t>(i)] : 0.0f;
          const index_t self = same_set ? i : -1;
          float lo = std::numeric_limits<float>::infinity(), hi = -lo;
          if (l2) {
            SIAM_OMP(simd reduction(min : lo) reduction(max : hi))
            for (index_t j = 0; j < n; ++j) {
              const float v = std::max(base + gn[static_cast<std::size_t>(j)] + t[j], 0.0f) + 0.0f;
              t[j] = v;
              lo = std::min(lo, v);
              hi = std::max(hi, v);
            }
          } else {
            SIAM_OMP(simd reduction(min : lo) reduction(max : hi))
            for (index_t j = 0; j < n; ++j) {
              const float v = t[j] + 0.0f;  // -0 as +0, the same distance as 0
              t[j] = v;
              lo = std::min(lo, v);
              hi = std::max(hi, v);
            }
          }
          const index_t need = std::max(r, k_recall);
          rank_row(t, n, self, need, lo, hi, s);
          const std::int64_t y = ql[i];
          const std::int64_t* near = s.idx.data();
          score[static_cast<std::size_t>(i)] = score_query(
              r, [&](index_t j) { return gl[near[j]] == y; }, opt.recall_at,
              recall_hit.data() + static_cast<std::size_t>(i) * nk);
        }
      } catch (const std::exception& ex) {  // exceptions must not leave the parallel region
        SIAM_OMP(critical(siam_accuracy_error)) {
          failed = true;
          message = ex.what();
        }
      }
    }
  }
  if (failed) throw error(message);
}

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
  const std::size_t nk = opt.recall_at.size();
  std::vector<QueryScore> score(static_cast<std::size_t>(queries.count));
  std::vector<unsigned char> recall_hit(static_cast<std::size_t>(queries.count) * nk, 0);
  index_t k_max = k_recall;
  for (const index_t r : R)
    k_max = std::max(k_max, r);
  const bool full_rows = opt.method == AccuracyMethod::full_rows ||
                         (opt.method == AccuracyMethod::automatic && k_max > 64);
  if (full_rows) {
    score_full_rows(queries, query_labels, reference, reference_labels, same_set, R, k_recall, opt,
                    score, recall_hit);
  } else {
    // Queries in chunks, each searched for as many neighbours as its largest R needs.
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
      knn_into(Rows{queries.row(c0), c1 - c0, queries.dim}, reference, k, opt.metric, so,
               nb.data());
      for (index_t i = c0; i < c1; ++i) {
        const index_t r = R[static_cast<std::size_t>(i)];
        if (r <= 0) continue;
        const std::int64_t y = query_labels[i];
        const Neighbour* row = nb.data() + (i - c0) * k;
        score[static_cast<std::size_t>(i)] = score_query(
            r, [&](index_t j) { return reference_labels[row[j].index] == y; }, opt.recall_at,
            recall_hit.data() + static_cast<std::size_t>(i) * nk);
      }
    }
  }
  // Sums in query order, so the result does not depend on the method or the threads.
  std::vector<double> recall_hits(nk, 0.0);
  double p1 = 0, rp = 0, map = 0;
  for (index_t i = 0; i < queries.count; ++i) {
    if (R[static_cast<std::size_t>(i)] <= 0) {
      ++acc.lone_queries;
      continue;
    }
    const auto& q = score[static_cast<std::size_t>(i)];
    p1 += q.p1;
    rp += q.rp;
    map += q.ap;
    for (std::size_t t = 0; t < nk; ++t)
      recall_hits[t] += recall_hit[static_cast<std::size_t>(i) * nk + t];
    ++acc.queries;
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

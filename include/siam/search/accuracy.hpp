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
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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
  std::vector<float> tile;                 // distances of a block of queries x a few columns
  std::vector<float> sample, thr;          // sampled distances; each query's threshold
  std::vector<std::size_t> start, cap, m;  // each query's candidate list in cand
  std::vector<std::uint64_t> cand, cand2;  // order_key(distance) << 32 | reference index
  std::vector<float> rows;                 // the whole distance rows of the queries redone
};

// A value v of x[0, n) (finite, n > rank) with at least rank + 1 entries <= v and few more
// than that: the largest entry of the bucket, among 1024 equal buckets between the smallest
// and the largest entry, that holds the rank-th smallest (a histogram, without the
// mispredicted branches of a selection).
inline float sample_threshold(const float* x, index_t n, index_t rank) {
  constexpr index_t buckets = 1024;
  float lo = x[0], hi = x[0];
  SIAM_OMP(simd reduction(min : lo) reduction(max : hi))
  for (index_t j = 0; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float span = hi - lo;
  if (!(span > 0) || !std::isfinite(span)) return hi;
  const float scale = static_cast<float>(buckets) / span;
  std::uint32_t count[buckets] = {};
  auto bucket = [&](float v) {
    return std::min<index_t>(static_cast<index_t>((v - lo) * scale), buckets - 1);
  };
  for (index_t j = 0; j < n; ++j)
    ++count[bucket(x[j])];
  index_t last = 0;
  for (index_t seen = 0; last < buckets - 1; ++last) {
    seen += count[last];
    if (seen > rank) break;
  }
  float thr = lo;
  SIAM_OMP(simd reduction(max : thr))
  for (index_t j = 0; j < n; ++j)
    thr = std::max(thr, bucket(x[j]) <= last ? x[j] : lo);
  return thr;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push  // GCC 12 misreads its own AVX-512 headers' undefined operands
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// Appends the entries of d[0, nb) (columns g0 + j) at or below thr to a candidate list c that
// holds m and has room for cap; past cap it only counts.
inline void gather_below(const float* d, index_t nb, index_t g0, float thr, std::uint64_t* c,
                         std::size_t& m, std::size_t cap) {
  std::size_t k = m;
  if (k + static_cast<std::size_t>(nb) <= cap) {
    index_t j = 0;
#if defined(__AVX512F__)
    // 16 at a time: compare, then compress the hits' (key, index) words together (the
    // register form: the memory form is slow on some processors); c has 16 entries of slack.
    const __m512 t = _mm512_set1_ps(thr);
    const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= nb; j += 16) {
      const __m512 v = _mm512_loadu_ps(d + j);
      const __mmask16 hit = _mm512_cmp_ps_mask(v, t, _CMP_LE_OQ);
      if (hit == 0) continue;
      const __m512i u = _mm512_castps_si512(v);  // order_key, 16 at a time
      const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), flip));
      const __m512i idx = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int>(g0 + j)));
      const __m512i lo = _mm512_unpacklo_epi32(idx, key), hi = _mm512_unpackhi_epi32(idx, key);
      // unpack interleaves within 128-bit lanes: put the words back in index order
      const __m512i w0 =
          _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi);
      const __m512i w1 =
          _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi);
      const auto h0 = static_cast<__mmask8>(hit & 0xFF), h1 = static_cast<__mmask8>(hit >> 8);
      _mm512_storeu_si512(c + k, _mm512_maskz_compress_epi64(h0, w0));
      k += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(h0)));
      _mm512_storeu_si512(c + k, _mm512_maskz_compress_epi64(h1, w1));
      k += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(h1)));
    }
#endif
    for (; j < nb; ++j) {  // branch-free: write always, advance on a hit
      const float v = d[j];
      c[k] = static_cast<std::uint64_t>(order_key(v)) << 32 | static_cast<std::uint64_t>(g0 + j);
      k += v <= thr ? 1 : 0;
    }
  } else {
    for (index_t j = 0; j < nb; ++j)
      if (d[j] <= thr) {
        if (k < cap)
          c[k] = static_cast<std::uint64_t>(order_key(d[j])) << 32 |
                 static_cast<std::uint64_t>(g0 + j);
        ++k;
      }
  }
  m = k;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Sorts c[0, m) (key << 32 | index, in index order) by key, stably, with a radix sort over
// only the key bits in which the entries differ; tmp has room for m. Returns where the
// sorted entries are (c or tmp).
inline std::uint64_t* sort_candidates(std::uint64_t* c, std::size_t m, std::uint64_t* tmp) {
  if (m < 2) return c;
  std::uint32_t kmin = std::numeric_limits<std::uint32_t>::max(), kmax = 0;
  SIAM_OMP(simd reduction(min : kmin) reduction(max : kmax))
  for (std::size_t i = 0; i < m; ++i) {
    const auto k = static_cast<std::uint32_t>(c[i] >> 32);
    kmin = std::min(kmin, k);
    kmax = std::max(kmax, k);
  }
  const int width = static_cast<int>(std::bit_width(kmax - kmin));
  if (width == 0) return c;  // one distance: already in index order
  const int passes = (width + 10) / 11, bits = (width + passes - 1) / passes;
  const std::uint32_t mask = (1u << bits) - 1;
  std::uint32_t hist[3][1u << 11] = {};
  for (std::size_t i = 0; i < m; ++i) {
    const std::uint32_t k = static_cast<std::uint32_t>(c[i] >> 32) - kmin;
    for (int pass = 0; pass < passes; ++pass)
      ++hist[pass][(k >> (pass * bits)) & mask];
  }
  std::uint64_t* from = c;
  std::uint64_t* to = tmp;
  for (int pass = 0; pass < passes; ++pass) {
    std::uint32_t* h = hist[pass];
    std::uint32_t run = 0;
    for (std::uint32_t b = 0; b <= mask; ++b) {
      const std::uint32_t count = h[b];
      h[b] = run;
      run += count;
    }
    const int shift = pass * bits;
    for (std::size_t i = 0; i < m; ++i) {
      const std::uint32_t k = static_cast<std::uint32_t>(from[i] >> 32) - kmin;
      to[h[(k >> shift) & mask]++] = from[i];
    }
    std::swap(from, to);
  }
  return from;
}

// The full-rows method, for each block of queries:
//  1. the distances to an evenly spaced sample of the reference rows give each query a
//     threshold a few standard deviations above the rank its R nearest would have there;
//  2. GEMMs of the whole block times a few reference columns at a time (the piece stays in
//     cache) give the distances, and the entries at or below each query's threshold are
//     gathered into its candidate list, in index order;
//  3. when a query has at least the neighbours it needs, every entry left out is farther
//     than all its candidates, and a stable radix sort of the candidates by distance bits
//     ranks its nearest by (distance, index); a query with too few (or too many to hold) has
//     its whole row computed again by the same GEMMs and every entry ranked.
// Memory per thread: the candidate lists of one block, a tile and the sample's GEMM.
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
  if (n > static_cast<index_t>(std::numeric_limits<std::uint32_t>::max()))
    throw value_error(std::string(op) + ": " + std::to_string(n) +
                      " reference rows, more than the full-rows method ranks (2^32 - 1)");
  const int threads = thread_count(opt.threads);
  // The sample: one reference row in every stride, copied together for one GEMM.
  const index_t stride = std::max<index_t>(1, n / 4096);
  const index_t ns = (n + stride - 1) / stride;
  std::vector<float> gs(static_cast<std::size_t>(ns * d)), gsn(static_cast<std::size_t>(ns));
  for (index_t i = 0; i < ns; ++i) {
    // One row drawn from each stride (a fixed hash of i): evenly spread, yet no alias of a
    // period in the rows' order (labels cycling through the classes).
    std::uint64_t h = static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    const index_t at =
        std::min(n - 1, i * stride + static_cast<index_t>(h % static_cast<std::uint64_t>(stride)));
    std::copy(G.row(at), G.row(at) + d, gs.data() + i * d);
    gsn[static_cast<std::size_t>(i)] = gn[static_cast<std::size_t>(at)];
  }
  // Blocks of up to 128 queries (a GEMM that tall runs near the machine's peak) whose
  // candidate lists (about 1.3 R + 64 entries of 8 bytes each) fit chunk_bytes over the
  // threads. A block's GEMMs cover its rows in one run of multiples of 16 and one of the
  // rest, the shapes the rows' distances are computed with whatever the block size.
  constexpr index_t group = 16;
  index_t r_max = k_recall;
  for (const index_t r : R)
    r_max = std::max(r_max, r);
  const std::size_t per_query =
      (static_cast<std::size_t>(std::min(n, r_max + r_max / 3 + 64)) + 1) * 2 *
      sizeof(std::uint64_t);
  index_t qb = std::clamp<index_t>(
      static_cast<index_t>(opt.chunk_bytes / (per_query * static_cast<std::size_t>(threads))), 1,
      128);
  if (qb > group) qb -= qb % group;
  const index_t gb = 1024;  // reference columns per GEMM
  const index_t blocks = (nq + qb - 1) / qb;
  const std::size_t nk = opt.recall_at.size();
  const float alpha = l2 ? -2.0f : -1.0f;
  // tile[i, j] = the distance of query q0 + i to reference row g0 + j (ld columns), by
  // GEMMs of the block's rows as described above.
  auto distances = [&](const float* ref, const std::vector<float>& refn, index_t q0, index_t mb,
                       index_t g0, index_t nb, float* tile, index_t ld) {
    for (index_t a = 0; a < mb;) {
      const index_t rows = mb - a >= group ? (mb - a) - (mb - a) % group : mb - a;
      siam::detail::gemm<float>(false, true, rows, nb, d, alpha, Q.row(q0 + a), d, ref + g0 * d, d,
                                0.0f, tile + a * ld, ld);
      a += rows;
    }
    for (index_t i = 0; i < mb; ++i) {
      float* t = tile + i * ld;
      const float* rn = refn.data() + g0;
      if (l2) {
        const float base = qn[static_cast<std::size_t>(q0 + i)];
        SIAM_OMP(simd)
        for (index_t j = 0; j < nb; ++j)
          t[j] = std::max(base + rn[j] + t[j], 0.0f) + 0.0f;
      } else {
        SIAM_OMP(simd)
        for (index_t j = 0; j < nb; ++j)
          t[j] = t[j] + 0.0f;  // -0 as +0, the same distance as 0
      }
      const index_t self = same_set ? q0 + i : -1;
      if (self >= g0 && self < g0 + nb && ref == G.data)
        t[self - g0] = std::numeric_limits<float>::quiet_NaN();  // never <= a threshold
    }
  };
  bool failed = false;
  std::string message;
  SIAM_OMP(parallel num_threads(threads) if (blocks > 1)) {
    RowScratch s;
    SIAM_OMP(for schedule(dynamic, 1))
    for (index_t b = 0; b < blocks; ++b) {
      try {
        const index_t q0 = b * qb, mb = std::min(qb, nq - q0);
        const auto mbs = static_cast<std::size_t>(mb);
        // 1. Thresholds from the sample.
        s.sample.resize(mbs * static_cast<std::size_t>(ns));
        distances(gs.data(), gsn, q0, mb, 0, ns, s.sample.data(), ns);
        s.thr.resize(mbs);
        s.start.resize(mbs);
        s.cap.resize(mbs);
        s.m.assign(mbs, 0);
        std::size_t total = 0;
        for (index_t i = 0; i < mb; ++i) {
          const index_t r = R[static_cast<std::size_t>(q0 + i)];
          const auto at = static_cast<std::size_t>(i);
          s.start[at] = total;
          if (r <= 0) {
            s.thr[at] = -std::numeric_limits<float>::infinity();
            s.cap[at] = 0;
            continue;
          }
          const double p = static_cast<double>(std::max(r, k_recall)) / static_cast<double>(n);
          const double sigma = std::sqrt(static_cast<double>(ns) * p * (1.0 - p)) + 2.0;
          const auto rank =
              static_cast<index_t>(std::ceil(p * static_cast<double>(ns) + 4.0 * sigma));
          s.thr[at] = rank < ns ? sample_threshold(s.sample.data() + i * ns, ns, rank)
                                : std::numeric_limits<float>::infinity();
          const double expect = static_cast<double>(std::min(rank + 1, ns)) *
                                static_cast<double>(n) / static_cast<double>(ns);
          s.cap[at] = static_cast<std::size_t>(
              std::min<double>(static_cast<double>(n), expect * 1.3 + 64.0));
          total += s.cap[at] + 16;
        }
        s.cand.resize(total);
        // 2. Distances, a few columns at a time, and the candidates below the thresholds.
        s.tile.resize(mbs * static_cast<std::size_t>(gb));
        for (index_t g0 = 0; g0 < n; g0 += gb) {
          const index_t nb = std::min(gb, n - g0);
          distances(G.data, gn, q0, mb, g0, nb, s.tile.data(), nb);
          for (std::size_t i = 0; i < mbs; ++i)
            if (s.cap[i] > 0)
              gather_below(s.tile.data() + i * static_cast<std::size_t>(nb), nb, g0, s.thr[i],
                           s.cand.data() + s.start[i], s.m[i], s.cap[i]);
        }
        // 3. Rows with too few or too many candidates: computed again in whole.
        std::vector<index_t> redo;
        for (index_t i = 0; i < mb; ++i) {
          const auto at = static_cast<std::size_t>(i);
          const index_t r = R[static_cast<std::size_t>(q0 + i)];
          if (r > 0 &&
              (s.m[at] < static_cast<std::size_t>(std::max(r, k_recall)) || s.m[at] > s.cap[at]))
            redo.push_back(i);
        }
        if (!redo.empty()) {
          s.rows.resize(redo.size() * static_cast<std::size_t>(n));
          for (index_t g0 = 0; g0 < n; g0 += gb) {
            const index_t nb = std::min(gb, n - g0);
            distances(G.data, gn, q0, mb, g0, nb, s.tile.data(), nb);
            for (std::size_t k = 0; k < redo.size(); ++k)
              std::copy(s.tile.data() + redo[k] * nb, s.tile.data() + (redo[k] + 1) * nb,
                        s.rows.data() + k * static_cast<std::size_t>(n) + g0);
          }
        }
        for (index_t i = 0; i < mb; ++i) {
          const auto at = static_cast<std::size_t>(i);
          const index_t r = R[static_cast<std::size_t>(q0 + i)];
          if (r <= 0) continue;
          std::uint64_t* c = s.cand.data() + s.start[at];
          std::size_t m = s.m[at];
          const auto again = std::find(redo.begin(), redo.end(), i);
          if (again != redo.end()) {
            s.cand2.resize(static_cast<std::size_t>(n));
            c = s.cand2.data();
            m = 0;
            const float* row = s.rows.data() + static_cast<std::size_t>(again - redo.begin()) *
                                                   static_cast<std::size_t>(n);
            for (index_t j = 0; j < n; ++j)
              if (row[j] == row[j])  // all but the query itself (NaN)
                c[m++] = static_cast<std::uint64_t>(order_key(row[j])) << 32 |
                         static_cast<std::uint64_t>(j);
            std::vector<std::uint64_t> tmp(m);
            std::uint64_t* sorted = sort_candidates(c, m, tmp.data());
            if (sorted != c) std::copy(sorted, sorted + m, c);
          } else {
            s.cand2.resize(std::max(s.cand2.size(), m));
            c = sort_candidates(c, m, s.cand2.data());
          }
          const std::int64_t y = ql[q0 + i];
          score[static_cast<std::size_t>(q0 + i)] = score_query(
              r, [&](index_t j) { return gl[c[j] & 0xFFFFFFFFu] == y; }, opt.recall_at,
              recall_hit.data() + static_cast<std::size_t>(q0 + i) * nk);
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

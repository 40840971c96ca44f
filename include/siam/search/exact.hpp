// Exact k-nearest-neighbour search over a gallery of embeddings, on the CPU.
//
// Distances come from blocked matrix products (the CPU GEMM provider of
// backend/cpu_gemm.hpp): a block of queries times a block of gallery rows gives a tile of
// dot products that stays in cache, and the top-k selection runs over the tile while it is
// hot. No query x gallery matrix is ever held; memory beyond the inputs and the result is
// one tile per thread plus a 2k-entry candidate buffer per query.
//
//   auto r = search::knn(queries, gallery, 10, search::Metric::l2);
//   r.index(i, 0), r.distance(i, 0)     // query i's nearest gallery row and its distance
//
// Ties: neighbours are ordered by (distance, gallery index), so of equal distances the
// smaller index comes first, whatever the number of threads or the block sizes.
// Precision: squared L2 distances are computed as |q|^2 + |g|^2 - 2 q.g in float (as FAISS
// does), clamped at 0; two neighbours whose distances differ by less than the rounding of
// that sum (about 1e-7 (|q|^2 + |g|^2)) may come in either order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "siam/backend/cpu_gemm.hpp"
#include "siam/detail/config.hpp"
#include "siam/error.hpp"
#include "siam/search/topk.hpp"
#include "siam/search/types.hpp"
#include "siam/shape.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace siam::search {

struct Options {
  /// The queries are gallery rows (query i is gallery row self_offset + i): each query's
  /// own row is left out of its neighbours, so k may be at most gallery.count - 1.
  bool exclude_self = false;
  index_t self_offset = 0;
  /// Threads (0: OpenMP's default). Results do not depend on it.
  int threads = 0;
  /// Block sizes (0: chosen for a 1 MB L2 cache). Results do not depend on them.
  index_t query_block = 0;
  index_t gallery_block = 0;
};

namespace detail {

/// Squared norms of the rows in float (what the GEMM formula adds to -2 q.g).
inline std::vector<float> squared_norms(const char* op, const char* what, const Rows& r) {
  std::vector<float> out(static_cast<std::size_t>(r.count));
  SIAM_OMP(parallel for if (r.count > 4096))
  for (index_t i = 0; i < r.count; ++i) {
    const float* x = r.row(i);
    float s = 0;
    for (index_t j = 0; j < r.dim; ++j)
      s += x[j] * x[j];
    out[static_cast<std::size_t>(i)] = s;
  }
  for (index_t i = 0; i < r.count; ++i)
    if (!std::isfinite(out[static_cast<std::size_t>(i)]))
      throw numeric_error(std::string(op) + ": " + what + " row " + std::to_string(i) +
                          " has a squared norm beyond float's range");
  return out;
}

// One unit of work: queries [q0, q1) against gallery rows [g0, g1), on one thread. The
// gallery block is the outer loop so that it is read from memory once per unit; each
// query block's tile of products is scanned right after the GEMM writes it.
struct Unit {
  index_t q0, q1, g0, g1;
};

inline void run_unit(const Rows& Q, const Rows& G, const float* qn, const float* gn, Metric metric,
                     const Options& opt, index_t qb, index_t gb, const Unit& u,
                     std::vector<TopK>& heaps, std::vector<float>& tile) {
  const index_t d = Q.dim;
  const bool l2 = metric == Metric::l2;
  tile.resize(static_cast<std::size_t>(qb * gb));
  for (index_t g0 = u.g0; g0 < u.g1; g0 += gb) {
    const index_t nb = std::min(gb, u.g1 - g0);
    for (index_t q0 = u.q0; q0 < u.q1; q0 += qb) {
      const index_t mb = std::min(qb, u.q1 - q0);
      // tile = -2 Q G^T (l2) or -Q G^T (inner product: smaller is nearer).
      siam::detail::gemm<float>(false, true, mb, nb, d, l2 ? -2.0f : -1.0f, Q.row(q0), d, G.row(g0),
                                d, 0.0f, tile.data(), nb);
      for (index_t i = 0; i < mb; ++i) {
        float* t = tile.data() + i * nb;
        TopK& top = heaps[static_cast<std::size_t>(q0 - u.q0 + i)];
        const float thr = top.threshold();
        const float base = l2 ? qn[q0 + i] : 0.0f;
        const float* gnb = gn + g0;
        // Finish the distances of 16 columns at a time (vectorised), and only look at the
        // columns one by one when one of them beats the threshold.
        for (index_t j0 = 0; j0 < nb; j0 += 16) {
          const index_t je = std::min(nb, j0 + 16);
          int hits = 0;
          if (l2) {
            SIAM_OMP(simd reduction(+ : hits))
            for (index_t j = j0; j < je; ++j) {
              const float v = std::max(base + gnb[j] + t[j], 0.0f);
              t[j] = v;
              hits += v < thr ? 1 : 0;
            }
          } else {
            SIAM_OMP(simd reduction(+ : hits))
            for (index_t j = j0; j < je; ++j)
              hits += t[j] < thr ? 1 : 0;
          }
          if (hits == 0) continue;
          const std::int64_t self = opt.exclude_self ? opt.self_offset + q0 + i : -1;
          for (index_t j = j0; j < je; ++j)
            if (g0 + j != self) top.push(t[j], g0 + j);
        }
      }
    }
  }
}

}  // namespace detail

namespace detail {

/// The argument checks of knn() that need no pass over the data.
inline void validate(const Rows& queries, const Rows& gallery, index_t k, Metric metric,
                     const Options& opt, const char* op = "search::knn") {
  detail::check_rows(op, "queries", queries);
  detail::check_rows(op, "gallery", gallery);
  if (queries.dim != gallery.dim)
    throw shape_error(std::string(op) + ": queries have dim " + std::to_string(queries.dim) +
                      ", the gallery " + std::to_string(gallery.dim));
  if (metric != Metric::l2 && metric != Metric::inner_product)
    throw value_error(std::string(op) + ": unknown metric " +
                      std::to_string(static_cast<std::uint32_t>(metric)));
  const index_t available = gallery.count - (opt.exclude_self ? 1 : 0);
  if (k < 1 || k > available)
    throw value_error(std::string(op) + ": k = " + std::to_string(k) + " must be in [1, " +
                      std::to_string(available) + "] (the gallery has " +
                      std::to_string(gallery.count) + " rows" +
                      (opt.exclude_self ? ", less the query itself)" : ")"));
  if (opt.exclude_self && (opt.self_offset < 0 || opt.self_offset + queries.count > gallery.count))
    throw value_error(std::string(op) + ": exclude_self with queries at gallery rows [" +
                      std::to_string(opt.self_offset) + ", " +
                      std::to_string(opt.self_offset + queries.count) + ") outside the " +
                      std::to_string(gallery.count) + " gallery rows");
}

}  // namespace detail

/// Writes the k nearest gallery rows of every query into out[q * k + r] (nearest first),
/// the lower-level form of knn() for callers that own the buffers (see knn()).
inline void knn_into(const Rows& queries, const Rows& gallery, index_t k, Metric metric,
                     const Options& opt, Neighbour* out) {
  constexpr const char* op = "search::knn";
  detail::validate(queries, gallery, k, metric, opt);
  if (queries.count == 0) return;
  detail::check_finite(op, "queries", queries);
  detail::check_finite(op, "gallery", gallery);
  const auto qn = detail::squared_norms(op, "queries", queries);
  const auto gn = detail::squared_norms(op, "gallery", gallery);

  const int threads = detail::thread_count(opt.threads);
  // Blocks: a query block of qb rows times a gallery block of gb rows gives a qb x gb float
  // tile (512 KB at 128 x 1024) that the selection reads back from L2.
  const index_t qb = opt.query_block > 0 ? opt.query_block : 128;
  const index_t gb = opt.gallery_block > 0 ? opt.gallery_block : 1024;
  // Work split: contiguous query ranges, one per thread, when there are enough queries to
  // go round; otherwise the gallery is cut into ranges and the partial lists merged.
  const index_t nq = queries.count, ng = gallery.count;
  const bool split_gallery = threads > 1 && nq < 16 * threads && ng >= 4 * gb * threads;
  const index_t parts_q = split_gallery ? 1 : std::min<index_t>(threads, nq);
  const index_t parts_g = split_gallery ? threads : 1;
  std::vector<detail::Unit> units;
  for (index_t a = 0; a < parts_q; ++a)
    for (index_t b = 0; b < parts_g; ++b)
      units.push_back(
          {nq * a / parts_q, nq * (a + 1) / parts_q, ng * b / parts_g, ng * (b + 1) / parts_g});
  std::vector<Neighbour> partial(split_gallery ? static_cast<std::size_t>(nq * k * parts_g) : 0);

  bool failed = false;
  std::string message;
  const auto n_units = static_cast<index_t>(units.size());
  SIAM_OMP(parallel for schedule(static, 1) num_threads(threads) if (n_units > 1))
  for (index_t w = 0; w < n_units; ++w) {
    try {
      const auto& u = units[static_cast<std::size_t>(w)];
      std::vector<TopK> heaps(static_cast<std::size_t>(u.q1 - u.q0), TopK(k));
      std::vector<float> tile;
      detail::run_unit(queries, gallery, qn.data(), gn.data(), metric, opt, qb, gb, u, heaps, tile);
      for (index_t i = u.q0; i < u.q1; ++i) {
        Neighbour* dst =
            split_gallery ? partial.data() + (i * parts_g + w % parts_g) * k : out + i * k;
        heaps[static_cast<std::size_t>(i - u.q0)].finish(dst);
      }
    } catch (const std::exception& ex) {  // exceptions must not leave the parallel region
      SIAM_OMP(critical(siam_search_error)) {
        failed = true;
        message = ex.what();
      }
    }
  }
  if (failed) throw error(message);
  if (split_gallery) {
    for (index_t i = 0; i < nq; ++i) {
      Neighbour* p = partial.data() + i * parts_g * k;
      std::partial_sort(p, p + k, p + parts_g * k);
      std::copy(p, p + k, out + i * k);
    }
  }
  if (metric == Metric::inner_product)
    for (index_t i = 0; i < nq * k; ++i)
      out[i].distance = -out[i].distance;
}

/// The k nearest gallery rows of each query under `metric`, nearest first, ties to the
/// smaller gallery index. Multi-threaded over OpenMP.
/// Throws shape_error when the dims differ; value_error for k outside [1, gallery rows]
/// (less one with exclude_self), empty or null inputs, a bad self_offset; numeric_error
/// for a NaN or infinite value (naming its row and column) or a norm that overflows.
[[nodiscard]] inline Result knn(const Rows& queries, const Rows& gallery, index_t k,
                                Metric metric = Metric::l2, const Options& opt = {}) {
  detail::validate(queries, gallery, k, metric, opt);  // before sizing the result by k
  std::vector<Neighbour> nb(static_cast<std::size_t>(queries.count * k));
  knn_into(queries, gallery, k, metric, opt, nb.data());
  Result r;
  r.queries = queries.count;
  r.k = k;
  r.indices.resize(nb.size());
  r.distances.resize(nb.size());
  for (std::size_t i = 0; i < nb.size(); ++i) {
    r.indices[i] = nb[i].index;
    r.distances[i] = nb[i].distance;
  }
  return r;
}

}  // namespace siam::search

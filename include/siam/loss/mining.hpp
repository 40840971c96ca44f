// Triplet losses with online mining inside a batch (Hermans, Beyer and Leibe 2017, "In
// Defense of the Triplet Loss for Person Re-Identification"), on a batch of embeddings
// E [n x D] with integer class labels (a P x K batch: P classes, K images each).
//
// With the distance matrix D = d(E_i, E_j) (Euclidean by default, through one GEMM):
//   batch hard: for each anchor a, its farthest positive p*(a) and nearest negative n*(a);
//     loss = mean_a max(D[a, p*] - D[a, n*] + margin, 0)
//     soft margin: mean_a softplus(D[a, p*] - D[a, n*])          (no margin)
//   batch all: every valid triplet (a, p, n) (label p = label a != label n, p != a);
//     loss = SUM max(D[a, p] - D[a, n] + margin, 0) / (number of active triplets)
//     soft margin: SUM softplus(D[a, p] - D[a, n]) / (number of valid triplets)
// Mining reads D on the host, except batch hard on a backend that mines on its device
// (siam::Cuda: no copy, no synchronisation; detail::batch_hard_on_device); the chosen entries
// are constants of the step, so the gradient is that of the loss for the mined triplets:
// batch hard gathers them (gather_rows: scatter-add backward); batch all weights D by the
// per-entry coefficients C = dloss/dD, written as  loss = sum(D * C) + (value - <C, D>).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "siam/autodiff/elementwise.hpp"
#include "siam/autodiff/metric.hpp"
#include "siam/autodiff/reduce.hpp"
#include "siam/autodiff/structure.hpp"
#include "siam/loss/triplet.hpp"

namespace siam {

struct MiningOptions {
  double margin = 0.2;  ///< >= 0; unused with `soft`
  bool soft = false;    ///< softplus instead of the hinge (Hermans et al.'s soft margin)
  Distance distance = Distance::euclidean;
  /// batch hard: an anchor with no positive or no negative in the batch is an error
  /// (value_error naming it) unless this is set; then it is left out.
  bool skip_invalid_anchors = false;
};

/// What a mining loss found in its batch.
struct MiningStats {
  index_t anchors = 0;   ///< anchors that contributed
  index_t triplets = 0;  ///< triplets in the loss (batch hard: one per anchor)
  index_t active = 0;    ///< triplets with a non-zero loss (all of them with `soft`)
};

namespace detail {

template <class T, class B, class L>
void check_mining_input(const char* op, const Var<T, B>& e, std::span<const L> labels,
                        const MiningOptions& opt) {
  const Shape s = e.shape();
  if (s.rank() != 2)
    throw shape_error(std::string(op) + ": embeddings " + s.str() + " are not n x D");
  if (static_cast<index_t>(labels.size()) != s.rows())
    throw shape_error(std::string(op) + ": " + std::to_string(labels.size()) +
                      " labels for embeddings " + s.str());
  if (!opt.soft && !(opt.margin >= 0))
    throw value_error(std::string(op) + ": margin must be >= 0, got " + std::to_string(opt.margin));
  if (s.rows() > 65535)
    throw shape_error(std::string(op) +
                      ": batches of more than 65535 embeddings are not supported, got " +
                      std::to_string(s.rows()));
}

template <class T, class B>
Var<T, B> distance_matrix(Var<T, B> e, Distance d) {
  Var<T, B> q = pairwise_sq_distances(e, e);
  return d == Distance::squared ? q : sqrt(q + static_cast<T>(triplet_eps));
}

inline double softplus_host(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x)));
}
inline double sigmoid_host(double x) {
  return 1 / (1 + std::exp(-x));
}

// A backend that mines on its device (siam::Cuda): B::mine_batch_hard writes each anchor's
// one-hot hardest positive and negative rows, with the host loop's tie-breaking.
template <class T, class B>
concept device_mining =
    !B::is_host && requires(const T* d, const std::int64_t* l, index_t n, T* out) {
  B::template mine_batch_hard<T>(d, l, n, out, out);
};

// Batch hard without reading D on the host: which anchors are valid follows from the labels
// alone (host), the mining runs on the device, and the mined entries are picked by one-hot
// masks: x[a] = sum_j D[a, j] P[a, j] - sum_j D[a, j] N[a, j] (one non-zero term each, so
// exactly D[a, p*] - D[a, n*], and the gradient reaches exactly those entries, as the
// gather's). Invalid anchors (skipped) are masked out of the mean. Errors and messages are
// the host path's. Reads back only when `stats` is asked for (the active count).
template <class T, class B, class L>
Var<T, B> batch_hard_on_device(Var<T, B> d, std::span<const L> labels, const MiningOptions& opt,
                               MiningStats* stats) {
  const index_t n = d.shape().rows();
  std::vector<std::int64_t> lab(labels.begin(), labels.end());
  std::vector<std::int64_t> sorted = lab;
  std::sort(sorted.begin(), sorted.end());
  const bool one_class = !sorted.empty() && sorted.front() == sorted.back();
  std::vector<T> valid(static_cast<std::size_t>(n), T(0));
  index_t m = 0;
  for (index_t a = 0; a < n; ++a) {
    const std::int64_t la = lab[static_cast<std::size_t>(a)];
    const auto same = std::upper_bound(sorted.begin(), sorted.end(), la) -
                      std::lower_bound(sorted.begin(), sorted.end(), la);
    const bool has_p = same > 1, has_q = !one_class;
    if (!has_p || !has_q) {
      if (opt.skip_invalid_anchors) continue;
      throw value_error("batch_hard_triplet_loss: anchor " + std::to_string(a) + " (label " +
                        std::to_string(labels[static_cast<std::size_t>(a)]) + ") has no " +
                        (!has_p ? "other image of its class" : "image of another class") +
                        " in the batch (use a P x K sampler with P >= 2 and K >= 2)");
    }
    valid[static_cast<std::size_t>(a)] = T(1);
    ++m;
  }
  if (m == 0)
    throw value_error("batch_hard_triplet_loss: no anchor of the batch of " + std::to_string(n) +
                      " has both a positive and a negative");
  auto& t = d.tape();
  Var<T, B> pos = t.make(Shape{n, n}, false), neg = t.make(Shape{n, n}, false);
  B::template mine_batch_hard<T>(d.value().data(), lab.data(), n, pos.value().data(),
                                 neg.value().data());
  Var<T, B> x = sum(d * pos, 1) - sum(d * neg, 1);
  Var<T, B> h = opt.soft ? softplus(x) : relu(x + static_cast<T>(opt.margin));
  if (m < n) {
    Var<T, B> mask = t.make(Shape{n}, false);
    B::from_host(mask.value().data(), valid.data(), n);
    h = h * mask;
  }
  if (stats) {
    const std::vector<T> xs = x.value().to_vector();
    index_t active = 0;
    for (index_t a = 0; a < n; ++a)
      if (valid[static_cast<std::size_t>(a)] != T(0) &&
          (opt.soft || double(xs[static_cast<std::size_t>(a)]) + opt.margin > 0))
        ++active;
    *stats = {m, m, active};
  }
  return sum(h) * static_cast<T>(1.0 / static_cast<double>(m));
}

}  // namespace detail

/// Batch-hard triplet loss (see the top of this header). Throws shape_error for labels
/// of the wrong length, value_error for a negative margin or an anchor without a
/// positive or a negative (unless skip_invalid_anchors; then only if no anchor is left).
template <class T, class B, std::integral L>
Var<T, B> batch_hard_triplet_loss(Var<T, B> e, std::span<const L> labels, MiningOptions opt = {},
                                  MiningStats* stats = nullptr) {
  detail::check_mining_input("batch_hard_triplet_loss", e, labels, opt);
  const index_t n = e.shape().rows();
  Var<T, B> d = detail::distance_matrix(e, opt.distance);
  if constexpr (detail::device_mining<T, B>)
    return detail::batch_hard_on_device(d, labels, opt, stats);
  const std::vector<T> dh = d.value().to_vector();
  std::vector<std::uint32_t> pos, neg;
  index_t active = 0;
  for (index_t a = 0; a < n; ++a) {
    index_t p = -1, q = -1;
    for (index_t j = 0; j < n; ++j) {
      const T v = dh[static_cast<std::size_t>(a * n + j)];
      if (labels[static_cast<std::size_t>(j)] == labels[static_cast<std::size_t>(a)]) {
        if (j != a && (p < 0 || v > dh[static_cast<std::size_t>(a * n + p)])) p = j;
      } else if (q < 0 || v < dh[static_cast<std::size_t>(a * n + q)]) {
        q = j;
      }
    }
    if (p < 0 || q < 0) {
      if (opt.skip_invalid_anchors) continue;
      throw value_error("batch_hard_triplet_loss: anchor " + std::to_string(a) + " (label " +
                        std::to_string(labels[static_cast<std::size_t>(a)]) + ") has no " +
                        (p < 0 ? "other image of its class" : "image of another class") +
                        " in the batch (use a P x K sampler with P >= 2 and K >= 2)");
    }
    pos.push_back(static_cast<std::uint32_t>(a * n + p));
    neg.push_back(static_cast<std::uint32_t>(a * n + q));
    const double x = double(dh[static_cast<std::size_t>(a * n + p)]) -
                     double(dh[static_cast<std::size_t>(a * n + q)]);
    if (opt.soft || x + opt.margin > 0) ++active;
  }
  if (pos.empty())
    throw value_error("batch_hard_triplet_loss: no anchor of the batch of " + std::to_string(n) +
                      " has both a positive and a negative");
  if (stats) *stats = {static_cast<index_t>(pos.size()), static_cast<index_t>(pos.size()), active};
  Var<T, B> flat = reshape(d, Shape{n * n, 1});
  Var<T, B> x = gather_rows(flat, pos) - gather_rows(flat, neg);
  return mean(opt.soft ? softplus(x) : relu(x + static_cast<T>(opt.margin)));
}
template <class T, class B, std::integral L>
Var<T, B> batch_hard_triplet_loss(Var<T, B> e, const std::vector<L>& labels, MiningOptions opt = {},
                                  MiningStats* stats = nullptr) {
  return batch_hard_triplet_loss(e, std::span<const L>(labels), opt, stats);
}

/// Batch-all triplet loss (see the top of this header). Throws as batch_hard_triplet_loss
/// does, and value_error when the batch holds no valid triplet.
template <class T, class B, std::integral L>
Var<T, B> batch_all_triplet_loss(Var<T, B> e, std::span<const L> labels, MiningOptions opt = {},
                                 MiningStats* stats = nullptr) {
  detail::check_mining_input("batch_all_triplet_loss", e, labels, opt);
  const index_t n = e.shape().rows();
  auto& t = e.tape();
  Var<T, B> d = detail::distance_matrix(e, opt.distance);
  const std::vector<T> dh = d.value().to_vector();
  std::vector<T> c(static_cast<std::size_t>(n * n), T(0));
  double value = 0;
  index_t valid = 0, active = 0, anchors = 0;
  for (index_t a = 0; a < n; ++a) {
    const L la = labels[static_cast<std::size_t>(a)];
    const index_t before = valid;
    for (index_t p = 0; p < n; ++p) {
      if (p == a || labels[static_cast<std::size_t>(p)] != la) continue;
      const double dap = dh[static_cast<std::size_t>(a * n + p)];
      for (index_t q = 0; q < n; ++q) {
        if (labels[static_cast<std::size_t>(q)] == la) continue;
        ++valid;
        const double x = dap - double(dh[static_cast<std::size_t>(a * n + q)]);
        double w;
        if (opt.soft) {
          value += detail::softplus_host(x);
          w = detail::sigmoid_host(x);
          ++active;
        } else {
          if (!(x + opt.margin > 0)) continue;
          value += x + opt.margin;
          w = 1;
          ++active;
        }
        c[static_cast<std::size_t>(a * n + p)] += static_cast<T>(w);
        c[static_cast<std::size_t>(a * n + q)] -= static_cast<T>(w);
      }
    }
    if (valid > before) ++anchors;
  }
  if (valid == 0)
    throw value_error("batch_all_triplet_loss: the batch of " + std::to_string(n) +
                      " embeddings holds no valid triplet (it needs two classes, one of them "
                      "with two images)");
  if (stats) *stats = {anchors, valid, active};
  const double denom = static_cast<double>(opt.soft ? valid : std::max<index_t>(active, 1));
  double dot = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    c[i] = static_cast<T>(c[i] / denom);
    dot += double(c[i]) * double(dh[i]);
  }
  Var<T, B> cv = t.make(Shape{n, n}, false);
  B::from_host(cv.value().data(), c.data(), n * n);
  return sum(d * cv) + static_cast<T>(value / denom - dot);
}
template <class T, class B, std::integral L>
Var<T, B> batch_all_triplet_loss(Var<T, B> e, const std::vector<L>& labels, MiningOptions opt = {},
                                 MiningStats* stats = nullptr) {
  return batch_all_triplet_loss(e, std::span<const L>(labels), opt, stats);
}

}  // namespace siam

// P x K batches for the mining losses (Hermans et al. 2017): P distinct classes, K images
// of each, so every anchor has K - 1 positives and (P - 1) K negatives in its batch.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "siam/data/pairs.hpp"

namespace siam::data {

class PKSampler {
 public:
  /// Throws value_error if P < 2 or K < 2, if the labels hold fewer than P classes, or,
  /// without replacement, if a class has fewer than K images (naming its label and count).
  template <std::integral L>
  PKSampler(std::span<const L> labels, std::size_t p, std::size_t k, bool with_replacement = false)
      : by_class_(labels, "PKSampler"), p_(p), k_(k), replace_(with_replacement) {
    if (p < 2 || k < 2)
      throw value_error("PKSampler: P = " + std::to_string(p) + " and K = " + std::to_string(k) +
                        " must both be >= 2 (anchors need positives and negatives)");
    if (by_class_.size() < p)
      throw value_error("PKSampler: P = " + std::to_string(p) +
                        " classes per batch, but the labels hold " +
                        std::to_string(by_class_.size()));
    for (std::size_t c = 0; c < by_class_.size(); ++c) {
      const std::size_t have = by_class_[c].size();
      if (have < (replace_ ? 1 : k))
        throw value_error("PKSampler: class " + std::to_string(by_class_.label(c)) + " has " +
                          std::to_string(have) + " image(s), fewer than K = " + std::to_string(k) +
                          (replace_ ? "" : " (ask for sampling with replacement to allow it)"));
    }
    order_.resize(by_class_.size());
  }
  template <std::integral L>
  PKSampler(const std::vector<L>& labels, std::size_t p, std::size_t k,
            bool with_replacement = false)
      : PKSampler(std::span<const L>(labels), p, k, with_replacement) {}

  std::size_t batch_size() const { return p_ * k_; }
  std::size_t num_classes() const { return by_class_.size(); }

  /// Fills `rows` (P K image indices, class after class) and `labels` (their label
  /// values). Draws: P distinct classes by a partial Fisher-Yates shuffle, then K distinct
  /// images of each the same way (or K uniform images with replacement). Reuses the
  /// vectors' capacity: a repeated call allocates nothing.
  void sample(Rng& rng, std::vector<std::uint32_t>& rows, std::vector<std::int64_t>& labels) {
    rows.resize(batch_size());
    labels.resize(batch_size());
    for (std::size_t c = 0; c < order_.size(); ++c)
      order_[c] = static_cast<std::uint32_t>(c);
    for (std::size_t i = 0; i < p_; ++i) {
      const std::size_t j = i + rng.below(order_.size() - i);
      std::swap(order_[i], order_[j]);
      const auto& imgs = by_class_[order_[i]];
      if (replace_) {
        for (std::size_t m = 0; m < k_; ++m)
          rows[i * k_ + m] = imgs[rng.below(imgs.size())];
      } else {
        pick_.assign(imgs.begin(), imgs.end());
        for (std::size_t m = 0; m < k_; ++m) {
          const std::size_t q = m + rng.below(pick_.size() - m);
          std::swap(pick_[m], pick_[q]);
          rows[i * k_ + m] = pick_[m];
        }
      }
      for (std::size_t m = 0; m < k_; ++m)
        labels[i * k_ + m] = by_class_.label(order_[i]);
    }
  }

 private:
  detail::ClassIndex by_class_;
  std::size_t p_, k_;
  bool replace_;
  std::vector<std::uint32_t> order_, pick_;
};

}  // namespace siam::data

// Balanced pair sampling for contrastive training: half similar pairs (two different
// images of one class), half dissimilar pairs (images of two different classes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/random.hpp"

namespace siam::data {

/// Draws (first, second, similar) index pairs over a labelled set.
class PairSampler {
 public:
  /// Indexes the images of each class c in [0, num_classes).
  /// Throws value_error if num_classes < 2, a label is >= num_classes, there are more
  /// images than 32-bit indices address, or a class has fewer than two images (no
  /// similar pair could be drawn; the message names the class and its count).
  explicit PairSampler(const std::vector<std::uint8_t>& labels, std::size_t num_classes = 10)
      : by_class_(num_classes) {
    if (num_classes < 2)
      throw value_error("PairSampler: num_classes " + std::to_string(num_classes) +
                        " must be >= 2 (dissimilar pairs need two classes)");
    if (labels.size() > std::numeric_limits<std::uint32_t>::max())
      throw value_error("PairSampler: " + std::to_string(labels.size()) +
                        " images exceed 32-bit indices");
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] >= num_classes)
        throw value_error("PairSampler: label " + std::to_string(labels[i]) + " at index " +
                          std::to_string(i) + " is not below num_classes " +
                          std::to_string(num_classes));
      by_class_[labels[i]].push_back(static_cast<std::uint32_t>(i));
    }
    for (std::size_t c = 0; c < num_classes; ++c)
      if (by_class_[c].size() < 2)
        throw value_error("PairSampler: class " + std::to_string(c) + " has " +
                          std::to_string(by_class_[c].size()) +
                          " image(s), at least 2 are needed for a similar pair");
  }

  std::size_t num_classes() const { return by_class_.size(); }

  /// Indices (ascending) of the images of class c. Throws value_error if c >= num_classes().
  const std::vector<std::uint32_t>& class_indices(std::size_t c) const {
    if (c >= by_class_.size())
      throw value_error("PairSampler::class_indices: class " + std::to_string(c) +
                        " is not below num_classes " + std::to_string(by_class_.size()));
    return by_class_[c];
  }

  /// Fills first, second, similar (each resized to n_pairs; capacity is reused, so a
  /// repeated call with the same n allocates nothing). Per pair, in this order of
  /// draws: bernoulli(0.5) decides similar; a similar pair takes a uniform class and
  /// two different uniform images of it (similar = 1); a dissimilar pair takes two
  /// different uniform classes and one uniform image of each (similar = 0).
  void sample(Rng& rng, std::size_t n_pairs, std::vector<std::uint32_t>& first,
              std::vector<std::uint32_t>& second, std::vector<float>& similar) const {
    first.resize(n_pairs);
    second.resize(n_pairs);
    similar.resize(n_pairs);
    const std::uint64_t k = by_class_.size();
    for (std::size_t p = 0; p < n_pairs; ++p) {
      if (rng.bernoulli(0.5)) {
        const auto& idx = by_class_[rng.below(k)];
        const std::uint64_t a = rng.below(idx.size());
        std::uint64_t b = rng.below(idx.size() - 1);  // uniform over the others
        if (b >= a) ++b;
        first[p] = idx[a];
        second[p] = idx[b];
        similar[p] = 1.0f;
      } else {
        const std::uint64_t ca = rng.below(k);
        std::uint64_t cb = rng.below(k - 1);
        if (cb >= ca) ++cb;
        const auto& ia = by_class_[ca];
        const auto& ib = by_class_[cb];
        first[p] = ia[rng.below(ia.size())];
        second[p] = ib[rng.below(ib.size())];
        similar[p] = 0.0f;
      }
    }
  }

 private:
  std::vector<std::vector<std::uint32_t>> by_class_;
};

}  // namespace siam::data

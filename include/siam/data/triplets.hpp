// Random triplets (anchor, positive, negative) for the plain triplet loss: an anchor class
// among those with two images or more, two different images of it, and one image of
// another class.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "siam/data/pairs.hpp"

namespace siam::data {

class TripletSampler {
 public:
  /// Throws value_error if the labels hold fewer than two classes or no class has two images.
  template <std::integral L>
  explicit TripletSampler(std::span<const L> labels) : by_class_(labels, "TripletSampler") {
    if (by_class_.size() < 2)
      throw value_error("TripletSampler: the labels hold " + std::to_string(by_class_.size()) +
                        " class(es); negatives need at least 2");
    for (std::size_t c = 0; c < by_class_.size(); ++c)
      if (by_class_[c].size() >= 2) anchor_classes_.push_back(static_cast<std::uint32_t>(c));
    if (anchor_classes_.empty())
      throw value_error("TripletSampler: no class has two images (an anchor needs a positive)");
  }
  template <std::integral L>
  explicit TripletSampler(const std::vector<L>& labels)
      : TripletSampler(std::span<const L>(labels)) {}

  /// Fills anchor, positive, negative (n each; capacity reused). Per triplet, in this
  /// order of draws: the anchor class, the anchor, the positive (uniform over the other
  /// images of the class), the negative class (uniform over the others), the negative.
  void sample(Rng& rng, std::size_t n, std::vector<std::uint32_t>& anchor,
              std::vector<std::uint32_t>& positive, std::vector<std::uint32_t>& negative) const {
    anchor.resize(n);
    positive.resize(n);
    negative.resize(n);
    const std::uint64_t k = by_class_.size();
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t c = anchor_classes_[rng.below(anchor_classes_.size())];
      const auto& idx = by_class_[c];
      const std::uint64_t a = rng.below(idx.size());
      std::uint64_t b = rng.below(idx.size() - 1);
      if (b >= a) ++b;
      std::uint64_t cn = rng.below(k - 1);
      if (cn >= c) ++cn;
      const auto& neg = by_class_[cn];
      anchor[i] = idx[a];
      positive[i] = idx[b];
      negative[i] = neg[rng.below(neg.size())];
    }
  }

 private:
  detail::ClassIndex by_class_;
  std::vector<std::uint32_t> anchor_classes_;
};

}  // namespace siam::data

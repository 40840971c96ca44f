// Balanced pair sampling for contrastive training: half similar pairs (two different
// images of one class), half dissimilar pairs (images of two different classes). The
// classes are whatever distinct label values the data holds.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/random.hpp"

namespace siam::data {

namespace detail {
/// The images of each class of a label array, classes in ascending label order: what
/// every sampler indexes. Throws value_error if there are more images than 32-bit
/// indices address.
class ClassIndex {
 public:
  template <std::integral L>
  explicit ClassIndex(std::span<const L> labels, const char* who) {
    if (labels.size() > std::numeric_limits<std::uint32_t>::max())
      throw value_error(std::string(who) + ": " + std::to_string(labels.size()) +
                        " images exceed 32-bit indices");
    std::vector<std::int64_t> values(labels.begin(), labels.end());
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    labels_ = values;
    by_class_.resize(values.size());
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const auto c =
          std::lower_bound(values.begin(), values.end(), std::int64_t(labels[i])) - values.begin();
      by_class_[static_cast<std::size_t>(c)].push_back(static_cast<std::uint32_t>(i));
    }
  }
  std::size_t size() const { return by_class_.size(); }
  const std::vector<std::uint32_t>& operator[](std::size_t c) const { return by_class_[c]; }
  /// The label value of class c.
  std::int64_t label(std::size_t c) const { return labels_[c]; }

 private:
  std::vector<std::vector<std::uint32_t>> by_class_;
  std::vector<std::int64_t> labels_;
};
}  // namespace detail

/// Draws (first, second, similar) index pairs over a labelled set.
class PairSampler {
 public:
  /// Indexes the images of each class; the classes are the distinct label values (any
  /// count, any values), in ascending order. Throws value_error if there are fewer than
  /// two classes (no dissimilar pair), more images than 32-bit indices address, or a
  /// class with fewer than two images (no similar pair; the message names its label and
  /// count).
  template <std::integral L>
  explicit PairSampler(std::span<const L> labels) : by_class_(labels, "PairSampler") {
    if (by_class_.size() < 2)
      throw value_error("PairSampler: the labels hold " + std::to_string(by_class_.size()) +
                        " class(es); dissimilar pairs need at least 2");
    for (std::size_t c = 0; c < by_class_.size(); ++c)
      if (by_class_[c].size() < 2)
        throw value_error("PairSampler: class " + std::to_string(by_class_.label(c)) + " has " +
                          std::to_string(by_class_[c].size()) +
                          " image(s), at least 2 are needed for a similar pair");
  }
  template <std::integral L>
  explicit PairSampler(const std::vector<L>& labels) : PairSampler(std::span<const L>(labels)) {}
  explicit PairSampler(std::initializer_list<int> labels)
      : PairSampler(std::span<const int>(labels.begin(), labels.size())) {}

  std::size_t num_classes() const { return by_class_.size(); }
  /// The label value of class c (classes in ascending label order).
  std::int64_t class_label(std::size_t c) const { return by_class_.label(c); }

  /// Indices (ascending) of the images of class c (c-th smallest label). Throws
  /// value_error if c >= num_classes().
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

  /// Fills first and second with n_pairs similar pairs only (a uniform class, two
  /// different uniform images of it): the positive pairs of NT-Xent.
  void sample_positive(Rng& rng, std::size_t n_pairs, std::vector<std::uint32_t>& first,
                       std::vector<std::uint32_t>& second) const {
    first.resize(n_pairs);
    second.resize(n_pairs);
    for (std::size_t p = 0; p < n_pairs; ++p) {
      const auto& idx = by_class_[rng.below(by_class_.size())];
      const std::uint64_t a = rng.below(idx.size());
      std::uint64_t b = rng.below(idx.size() - 1);
      if (b >= a) ++b;
      first[p] = idx[a];
      second[p] = idx[b];
    }
  }

 private:
  detail::ClassIndex by_class_;
};

}  // namespace siam::data

// Streaming top-k selection: the k smallest (distance, index) pairs of a stream of
// candidates, in O(1) amortised work per candidate. Candidates go into a buffer of 2k;
// when it fills, nth_element keeps the k best and the k-th becomes the admission
// threshold, so once the stream has settled almost every candidate costs one compare.
// Order is (distance, index): of equal distances the smaller index comes first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "siam/shape.hpp"

namespace siam::search {

/// One neighbour: its row in the gallery and its distance (or score, see Metric).
struct Neighbour {
  float distance = std::numeric_limits<float>::infinity();
  std::int64_t index = -1;
  friend bool operator<(const Neighbour& a, const Neighbour& b) {
    return a.distance < b.distance || (a.distance == b.distance && a.index < b.index);
  }
};

/// The k smallest of the candidates pushed so far. push() expects candidates in
/// increasing index order (one scan over a gallery): then a candidate whose distance
/// equals the current threshold can be dropped, since every kept pair beats it on index.
class TopK {
 public:
  explicit TopK(index_t k = 1) { reset(k); }

  void reset(index_t k) {
    k_ = std::max<index_t>(k, 1);
    buf_.clear();
    buf_.reserve(static_cast<std::size_t>(2 * k_));
    threshold_ = std::numeric_limits<float>::infinity();
  }
  index_t k() const { return k_; }
  /// Candidates at or above this can never enter the result.
  float threshold() const { return threshold_; }

  void push(float distance, std::int64_t index) {
    if (!(distance < threshold_)) return;
    buf_.push_back({distance, index});
    if (static_cast<index_t>(buf_.size()) == 2 * k_) compact();
  }

  /// Writes the min(k, pushed) best in order, then pads with (inf, -1) up to k.
  void finish(Neighbour* out) {
    const auto kept = std::min<std::size_t>(buf_.size(), static_cast<std::size_t>(k_));
    if (buf_.size() > kept)
      std::nth_element(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(kept), buf_.end());
    std::sort(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(kept));
    std::copy(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(kept), out);
    std::fill(out + kept, out + k_, Neighbour{});
  }

 private:
  void compact() {
    const auto kk = static_cast<std::ptrdiff_t>(k_);
    std::nth_element(buf_.begin(), buf_.begin() + kk - 1, buf_.end());
    threshold_ = buf_[static_cast<std::size_t>(kk - 1)].distance;
    // Everything after the k-th is no better than it; ties at the threshold are
    // resolved by index, so keep only the first k.
    buf_.resize(static_cast<std::size_t>(kk));
  }

  index_t k_ = 1;
  std::vector<Neighbour> buf_;
  float threshold_ = std::numeric_limits<float>::infinity();
};

}  // namespace siam::search

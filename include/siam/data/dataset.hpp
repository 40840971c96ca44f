// An image data set in plain memory: grey images as floats in [0, 1] plus one
// 64-bit integer label per image (the same label type as ImageSet, image folders and
// the search metrics). Deliberately free of tensor types so that readers, generators
// and samplers can be used (and fuzzed) without the autodiff core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "siam/error.hpp"

namespace siam::data {

/// n images of rows x cols pixels, stored image after image, each row-major.
/// Invariant (checked by validate()): images.size() == labels.size() * rows * cols.
struct Dataset {
  std::size_t rows = 28, cols = 28;
  std::vector<float> images;         // n * rows * cols values in [0, 1]
  std::vector<std::int64_t> labels;  // n labels (any values; class_counts wants 0..C-1)

  /// Number of images (= labels.size()).
  std::size_t size() const { return labels.size(); }
  /// Pixels per image (rows * cols).
  std::size_t pixels() const { return rows * cols; }

  /// Pointer to the first pixel of image i (pixels() values follow).
  /// Throws value_error if i >= size().
  const float* image(std::size_t i) const {
    check_index(i);
    return images.data() + i * pixels();
  }
  float* image(std::size_t i) {
    check_index(i);
    return images.data() + i * pixels();
  }

  /// Throws value_error unless images.size() == size() * pixels() and rows, cols > 0.
  void validate() const {
    if (rows == 0 || cols == 0)
      throw value_error("Dataset: zero image dimension " + std::to_string(rows) + "x" +
                        std::to_string(cols));
    if (images.size() != size() * pixels())
      throw value_error("Dataset: " + std::to_string(images.size()) + " pixel values for " +
                        std::to_string(size()) + " labels of " + std::to_string(rows) + "x" +
                        std::to_string(cols) + " images (expected " +
                        std::to_string(size() * pixels()) + ")");
  }

  /// Copy of images [first, first + count). Throws value_error if the range does not
  /// lie inside [0, size()) or the data set is inconsistent (see validate()).
  Dataset slice(std::size_t first, std::size_t count) const {
    validate();
    if (first > size() || count > size() - first)
      throw value_error("Dataset::slice: range [" + std::to_string(first) + ", " +
                        std::to_string(first) + " + " + std::to_string(count) +
                        ") is outside a data set of " + std::to_string(size()) + " images");
    Dataset out;
    out.rows = rows;
    out.cols = cols;
    const auto px = static_cast<std::ptrdiff_t>(pixels());
    const auto f = static_cast<std::ptrdiff_t>(first), c = static_cast<std::ptrdiff_t>(count);
    out.images.assign(images.begin() + f * px, images.begin() + (f + c) * px);
    out.labels.assign(labels.begin() + f, labels.begin() + f + c);
    return out;
  }

  /// counts[c] = number of images labelled c, for c in [0, num_classes).
  /// Throws value_error if a label is negative or >= num_classes.
  std::vector<std::size_t> class_counts(std::size_t num_classes = 10) const {
    std::vector<std::size_t> counts(num_classes, 0);
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0 || static_cast<std::uint64_t>(labels[i]) >= num_classes)
        throw value_error("Dataset::class_counts: label " + std::to_string(labels[i]) +
                          " at index " + std::to_string(i) + " is not in [0, num_classes " +
                          std::to_string(num_classes) + ")");
      ++counts[static_cast<std::size_t>(labels[i])];
    }
    return counts;
  }

 private:
  void check_index(std::size_t i) const {
    if (i >= size())
      throw value_error("Dataset::image: index " + std::to_string(i) +
                        " out of range for a data set of " + std::to_string(size()) + " images");
  }
};

}  // namespace siam::data

// Shape of a tensor: rank 1 to 5, row-major (rank 5: channel-blocked activations,
// autodiff/layout.hpp). Elementwise code sees every tensor as
// a matrix: rows = first dimension, cols = product of the others (a rank-1 tensor of
// n elements is one row of n), which is what bias broadcasting and GEMM need.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "siam/error.hpp"

namespace siam {

using index_t = std::int64_t;

class Shape {
 public:
  static constexpr int max_rank = 5;

  Shape() = default;  // rank 1, zero elements
  Shape(std::initializer_list<index_t> dims) {
    if (dims.size() < 1 || dims.size() > max_rank)
      throw shape_error("Shape: rank must be 1 to 5, got " + std::to_string(dims.size()));
    rank_ = static_cast<int>(dims.size());
    int i = 0;
    for (index_t d : dims)
      dims_[i++] = d;
    validate();
  }
  static Shape matrix(index_t rows, index_t cols) { return Shape{rows, cols}; }

  int rank() const { return rank_; }
  index_t operator[](int i) const { return dims_[i]; }
  index_t size() const {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i)
      n *= dims_[i];
    return n;
  }
  index_t rows() const { return rank_ == 1 ? 1 : dims_[0]; }
  index_t cols() const {
    if (rank_ == 1) return dims_[0];
    index_t n = 1;
    for (int i = 1; i < rank_; ++i)
      n *= dims_[i];
    return n;
  }

  /// The same trailing dimensions with a different first dimension (row slicing).
  Shape with_rows(index_t rows) const {
    Shape s = *this;
    if (rank_ == 1) throw shape_error("with_rows: a rank-1 shape " + str() + " has no row axis");
    s.dims_[0] = rows;
    s.validate();
    return s;
  }

  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }

  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i)
      s += (i ? " x " : "") + std::to_string(dims_[i]);
    return s + "]";
  }

 private:
  // Negative dimensions and element counts that overflow are rejected here, once,
  // so nothing downstream multiplies unchecked header values.
  void validate() const {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i) {
      if (dims_[i] < 0) throw shape_error("Shape: negative dimension in " + str());
      if (dims_[i] != 0 && n > std::numeric_limits<index_t>::max() / 8 / dims_[i])
        throw shape_error("Shape: element count of " + str() + " overflows");
      n *= dims_[i];
    }
  }

  index_t dims_[max_rank] = {0, 0, 0, 0, 0};
  int rank_ = 1;
};

/// Throws shape_error "<op>: shapes A and B differ" unless equal.
inline void require_same_shape(const char* op, const Shape& a, const Shape& b) {
  if (!(a == b))
    throw shape_error(std::string(op) + ": shapes " + a.str() + " and " + b.str() +
                      " do not match");
}

}  // namespace siam

// The single evaluation point: how an expression is written into a destination buffer.
// Elementwise trees become one kernel run by the backend's `assign`; reductions and
// GEMMs call their backend primitive. Everything here is backend-agnostic.
#pragma once

#include <cstdint>
#include <utility>

#include "siam/expr.hpp"

namespace siam::detail {

/// A destination: raw storage on backend B (what a Tensor or View lends the evaluator).
template <class T, class B>
struct Dest {
  T* data;
  Shape shape;
};

/// Reads contiguous row-major storage; the leaf of every kernel tree. In a flat
/// evaluation r is always 0, so c is the linear index.
template <class T>
struct LeafKernel {
  const T* p;
  index_t ld;
  SIAM_HD T operator()(index_t r, index_t c) const { return p[r * ld + c]; }
};

/// Leaf node over raw storage; Tensor and View behave like it.
template <class T, class B>
struct LeafRef {
  using siam_expression = void;
  using value_type = T;
  using backend_type = B;
  static constexpr int kind = elementwise;
  static constexpr bool broadcasts = false;
  const T* ptr;
  Shape shape_;
  explicit LeafRef(Dest<T, B> d) : ptr(d.data), shape_(d.shape) {}
  LeafRef(const T* p, Shape s) : ptr(p), shape_(s) {}
  Shape shape() const { return shape_; }
  const T* data() const { return ptr; }
  LeafKernel<T> kernel() const { return {ptr, shape_.cols()}; }
  bool aliases(const void* lo, const void* hi) const {
    const auto b = reinterpret_cast<std::uintptr_t>(ptr);
    const auto e = reinterpret_cast<std::uintptr_t>(ptr + shape_.size());
    return shape_.size() != 0 && b < reinterpret_cast<std::uintptr_t>(hi) &&
           reinterpret_cast<std::uintptr_t>(lo) < e;
  }
  // Reading exactly the destination, element for element, is safe in place; reading
  // it shifted (an overlapping slice) is not.
  bool conflicts(const void* lo, const void* hi) const {
    return aliases(lo, hi) && !(static_cast<const void*>(ptr) == lo &&
                                static_cast<const void*>(ptr + shape_.size()) == hi);
  }
};

template <class T, class B, class E>
void assign_elementwise(Dest<T, B> dst, const E& e) {
  const Shape s = e.shape();
  if constexpr (std::remove_cvref_t<E>::broadcasts)
    B::assign(dst.data, s.rows(), s.cols(), e.kernel());
  else
    B::assign(dst.data, index_t{1}, s.size(), e.kernel());  // flat: no row structure
}

/// Writes (or, with accumulate, adds) expression e into dst. Shapes must already match
/// and dst must not alias anything but same-index reads (callers check aliasing).
template <class T, class B, class E>
void evaluate(Dest<T, B> dst, const E& e, bool accumulate) {
  using X = std::remove_cvref_t<E>;
  if constexpr (X::kind == elementwise) {
    // dst += e stays one pass: dst is read at the same index it is written.
    if (accumulate)
      assign_elementwise(
          dst, Binary<fn::add, const LeafRef<T, B>&, const E&>{LeafRef<T, B>{dst}, e, {}});
    else
      assign_elementwise(dst, e);
  } else if constexpr (X::kind == reduction) {
    const Shape in = e.a.shape();
    const auto k = e.a.kernel();
    if constexpr (X::mode == 0) {
      if constexpr (X::broadcasts)
        B::sum_all(dst.data, in.rows(), in.cols(), k, accumulate);
      else
        B::sum_all(dst.data, index_t{1}, in.size(), k, accumulate);  // flat
    } else if constexpr (X::mode == 1) {
      B::sum_rows(dst.data, in.rows(), in.cols(), k, accumulate);
    } else if constexpr (X::mode == 2) {
      B::sum_cols(dst.data, in.rows(), in.cols(), k, accumulate);
    } else {
      if (accumulate) throw value_error("max_cols: a maximum cannot be accumulated with +=");
      B::max_cols(dst.data, in.rows(), in.cols(), k);
    }
  } else {
    const Shape sa = e.a.shape(), sb = e.b.shape();
    B::gemm(e.trans_a, e.trans_b, e.m(), e.n(), e.k(), T(1), e.a.data(), sa.cols(), e.b.data(),
            sb.cols(), accumulate ? T(1) : T(0), dst.data, e.n());
  }
}

/// Whether e must be evaluated into a temporary before it lands in [lo, hi).
template <class E>
bool needs_temporary(const E& e, const void* lo, const void* hi) {
  return lo != hi && e.conflicts(lo, hi);
}

}  // namespace siam::detail

// Dropout on tape variables (inverted scaling), forward and backward side by side. The mask
// is not stored: element i of step `step` is kept when a counter-based hash of
// (seed, step, i) is at least p, so the same (seed, step) gives the same mask on any
// backend and for any number of threads, and the backward recomputes it.
#pragma once

#include <bit>
#include <cstdint>
#include <string>

#include "siam/autodiff/tape.hpp"
#include "siam/detail/config.hpp"

namespace siam {

namespace detail {

// SplitMix64's finaliser: a bijective 64-bit mix with full avalanche.
SIAM_HD inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The key of one (seed, step): every element's draw is mix64(key ^ mix64(index)).
inline std::uint64_t dropout_key(std::uint64_t seed, std::uint64_t step) {
  return mix64(mix64(seed) + 0x9e3779b97f4a7c15ULL * (step + 1));
}

template <class T>
struct DropoutMaskKernel {
  std::uint64_t key;
  std::uint64_t threshold;  // drop when the draw's top 53 bits are below p 2^53
  index_t cols;
  T scale;
  SIAM_HD T operator()(index_t r, index_t c) const {
    const auto i = static_cast<std::uint64_t>(r * cols + c);
    return (mix64(key ^ mix64(i)) >> 11) < threshold ? T(0) : scale;
  }
};

}  // namespace detail

/// The mask of dropout(p, key) as an expression: 0 for a dropped element, 1 / (1 - p) for a
/// kept one.
template <class T, class B>
struct DropoutMask {
  using siam_expression = void;
  using value_type = T;
  using backend_type = B;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts = true;  // reads (r, c)
  Shape shape_;
  std::uint64_t key;
  double p;
  Shape shape() const { return shape_; }
  detail::DropoutMaskKernel<T> kernel() const {
    return {key, static_cast<std::uint64_t>(p * 0x1.0p53), shape_.cols(),
            static_cast<T>(1.0 / (1.0 - p))};
  }
  bool aliases(const void*, const void*) const { return false; }
  bool conflicts(const void*, const void*) const { return false; }
};

// ---- dropout: y = x m, m[i] = 0 with probability p, else 1 / (1 - p) (so E[y] = x);
//   dx += dy m  (the same mask, recomputed from (seed, step)).
// Throws value_error for p outside [0, 1).
template <class T, class B>
Var<T, B> dropout(Var<T, B> x, double p, std::uint64_t seed, std::uint64_t step) {
  if (!(p >= 0 && p < 1))
    throw value_error("dropout: p must be in [0, 1), got " + std::to_string(p));
  auto& t = x.tape();
  const std::uint64_t key = detail::dropout_key(seed, step);
  Var<T, B> y = t.make(x.shape(), x.requires_grad());
  y.value() = x.value() * DropoutMask<T, B>{x.shape(), key, p};
  auto* node = t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const Shape s = tp.shape(n.in[0]);
        const auto k = static_cast<std::uint64_t>(n.i[0]);
        tp.accumulate(n.in[0],
                      tp.out_grad(n) * DropoutMask<T, B>{s, k, std::bit_cast<double>(n.i[1])});
      },
      y, {x.id()});
  if (node) {
    node->i[0] = static_cast<index_t>(key);
    node->i[1] = std::bit_cast<index_t>(p);  // exactly the forward's p
  }
  return y;
}

}  // namespace siam

// Expression nodes. A node only stores its operands (by closure type: a named tensor
// by const reference, a temporary by value, so `auto e = a + b * 2;` never dangles) and
// the functor it applies. Nothing is computed here: assigning an expression to a
// Tensor or View is the single evaluation point, where the backend's evaluator turns
// the tree into one loop (CPU) or one kernel (GPU) through `kernel()`.
//
// Node categories:
//   elementwise  Unary, Binary, Constant, broadcasts     -> one fused pass
//   reduction    SumAll, SumRows, SumCols                -> one pass, assignable only
//   forced       Matmul                                  -> GEMM into a real buffer
#pragma once

#include <concepts>
#include <string>
#include <type_traits>
#include <utility>

#include "siam/functors.hpp"
#include "siam/shape.hpp"

namespace siam {

/// Anything that can be assigned to a tensor: a Tensor, a View or a node.
template <class E>
concept Expression = requires {
  typename std::remove_cvref_t<E>::siam_expression;
};

/// An expression evaluated coefficient by coefficient (can be nested in others).
template <class E>
concept Elementwise = Expression<E> && std::remove_cvref_t<E>::kind == 0;

/// A Tensor or View: real storage with a data pointer.
template <class E>
concept Storage = Elementwise<E> && requires(const std::remove_cvref_t<E>& e) {
  {e.data()};
};

template <class E>
using value_t = typename std::remove_cvref_t<E>::value_type;
template <class E>
using backend_t = typename std::remove_cvref_t<E>::backend_type;

namespace detail {

enum kind_t : int { elementwise = 0, reduction = 1, forced = 2 };

// How a node keeps an operand: named objects by reference, temporaries by value.
template <class E>
using closure_t = std::conditional_t<std::is_lvalue_reference_v<E>,
                                     const std::remove_reference_t<E>&, std::remove_cvref_t<E>>;

template <class A, class B>
constexpr void check_compatible() {
  static_assert(std::is_same_v<value_t<A>, value_t<B>>,
                "siam: operands have different scalar types (float vs double); convert one "
                "explicitly");
  static_assert(std::is_same_v<backend_t<A>, backend_t<B>>,
                "siam: operands live on different backends; copy one with .to<Backend>()");
}

template <class E>
constexpr void check_elementwise() {
  static_assert(std::remove_cvref_t<E>::kind == elementwise,
                "siam: a reduction or matmul cannot be nested inside an elementwise "
                "expression; assign it to a Tensor first");
}

// ---- kernels: the trivially copyable evaluators that run inside a loop or a CUDA kernel

template <class T>
struct ConstantKernel {
  T v;
  SIAM_HD T operator()(index_t, index_t) const { return v; }
};
template <class T>
struct DiagonalKernel {
  T v;
  SIAM_HD T operator()(index_t r, index_t c) const { return r == c ? v : T(0); }
};
template <class Op, class K>
struct UnaryKernel {
  Op op;
  K a;
  SIAM_HD auto operator()(index_t r, index_t c) const { return op(a(r, c)); }
};
template <class Op, class KA, class KB>
struct BinaryKernel {
  Op op;
  KA a;
  KB b;
  SIAM_HD auto operator()(index_t r, index_t c) const { return op(a(r, c), b(r, c)); }
};
template <class K>
struct RowBroadcastKernel {  // reads row 0 of its operand for every row
  K a;
  SIAM_HD auto operator()(index_t, index_t c) const { return a(0, c); }
};
template <class K>
struct ColBroadcastKernel {  // reads column 0 of its operand for every column
  K a;
  SIAM_HD auto operator()(index_t r, index_t) const { return a(r, 0); }
};
template <class K>
struct TransposeKernel {  // element (r, c) of the result is (c, r) of the operand
  K a;
  SIAM_HD auto operator()(index_t r, index_t c) const { return a(c, r); }
};
template <class K>
struct ScalarBroadcastKernel {  // reads element 0 (a device-resident scalar)
  K a;
  SIAM_HD auto operator()(index_t, index_t) const { return a(0, 0); }
};

}  // namespace detail

// ---- elementwise nodes

/// A scalar repeated over a shape (what `a * 2` turns the 2 into).
template <class T, class B>
struct Constant {
  using siam_expression = void;
  using value_type = T;
  using backend_type = B;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts = false;
  Shape shape_;
  T value;
  Shape shape() const { return shape_; }
  detail::ConstantKernel<T> kernel() const { return {value}; }
  bool aliases(const void*, const void*) const { return false; }
  bool conflicts(const void*, const void*) const { return false; }
};

/// v on the diagonal (row index == column index), 0 elsewhere: v I for square shapes.
template <class T, class B>
struct Diagonal {
  using siam_expression = void;
  using value_type = T;
  using backend_type = B;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts = true;  // needs (r, c)
  Shape shape_;
  T value;
  Shape shape() const { return shape_; }
  detail::DiagonalKernel<T> kernel() const { return {value}; }
  bool aliases(const void*, const void*) const { return false; }
  bool conflicts(const void*, const void*) const { return false; }
};

template <class Op, class A>
struct Unary {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts = std::remove_cvref_t<A>::broadcasts;
  detail::closure_t<A> a;
  Op op;
  Shape shape() const { return a.shape(); }
  auto kernel() const { return detail::UnaryKernel<Op, decltype(a.kernel())>{op, a.kernel()}; }
  bool aliases(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
  bool conflicts(const void* lo, const void* hi) const { return a.conflicts(lo, hi); }
};

template <class Op, class A, class B>
struct Binary {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts =
      std::remove_cvref_t<A>::broadcasts || std::remove_cvref_t<B>::broadcasts;
  detail::closure_t<A> a;
  detail::closure_t<B> b;
  Op op;
  Shape shape() const { return a.shape(); }
  auto kernel() const {
    return detail::BinaryKernel<Op, decltype(a.kernel()), decltype(b.kernel())>{op, a.kernel(),
                                                                                b.kernel()};
  }
  bool aliases(const void* lo, const void* hi) const {
    return a.aliases(lo, hi) || b.aliases(lo, hi);
  }
  bool conflicts(const void* lo, const void* hi) const {
    return a.conflicts(lo, hi) || b.conflicts(lo, hi);
  }
};

/// Broadcast node. Mode 0: a 1 x C row over R rows; 1: an R x 1 column over C columns;
/// 2: a single element over any shape.
template <class A, int Mode>
struct Broadcast {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::elementwise;
  // A scalar broadcast reads the same element at every index, so it evaluates flat.
  static constexpr bool broadcasts = Mode != 2;
  detail::closure_t<A> a;
  Shape shape_;
  Shape shape() const { return shape_; }
  auto kernel() const {
    using K = decltype(a.kernel());
    if constexpr (Mode == 0)
      return detail::RowBroadcastKernel<K>{a.kernel()};
    else if constexpr (Mode == 1)
      return detail::ColBroadcastKernel<K>{a.kernel()};
    else
      return detail::ScalarBroadcastKernel<K>{a.kernel()};
  }
  bool aliases(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
  // Other rows or columns of the operand are read for every output: any overlap with
  // the destination would be overwritten before it is read.
  bool conflicts(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
};

/// The transpose of a matrix expression: [R x C] -> [C x R].
template <class A>
struct Transpose {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::elementwise;
  static constexpr bool broadcasts = true;  // reads across rows: evaluated with (r, c)
  detail::closure_t<A> a;
  Shape shape() const { return Shape{a.shape().cols(), a.shape().rows()}; }
  auto kernel() const { return detail::TransposeKernel<decltype(a.kernel())>{a.kernel()}; }
  bool aliases(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
  bool conflicts(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
};

// ---- reductions (assignable to a tensor; not nestable)

/// Mode 0: sum of all elements -> shape [1]. 1: sum over rows -> [C] (bias gradients).
/// 2: sum over columns -> [R x 1] (per-row sums). 3: maximum over columns -> [R x 1].
template <class A, int Mode>
struct Sum {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::reduction;
  static constexpr int mode = Mode;
  static constexpr bool broadcasts = std::remove_cvref_t<A>::broadcasts;
  detail::closure_t<A> a;
  Shape shape() const {
    const Shape s = a.shape();
    if constexpr (Mode == 0)
      return Shape{1};
    else if constexpr (Mode == 1)
      return Shape{s.cols()};
    else
      return Shape{s.rows(), 1};  // modes 2 and 3
  }
  bool aliases(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
  bool conflicts(const void* lo, const void* hi) const { return a.aliases(lo, hi); }
};

// ---- forced node

/// C = op(A) op(B) with op = identity or transpose; evaluated by the backend's GEMM
/// straight into the destination buffer.
template <class A, class B>
struct Matmul {
  using siam_expression = void;
  using value_type = value_t<A>;
  using backend_type = backend_t<A>;
  static constexpr int kind = detail::forced;
  static constexpr bool broadcasts = false;
  detail::closure_t<A> a;
  detail::closure_t<B> b;
  bool trans_a, trans_b;
  index_t m() const { return trans_a ? a.shape().cols() : a.shape().rows(); }
  index_t k() const { return trans_a ? a.shape().rows() : a.shape().cols(); }
  index_t n() const { return trans_b ? b.shape().rows() : b.shape().cols(); }
  Shape shape() const { return Shape{m(), n()}; }
  bool aliases(const void* lo, const void* hi) const {
    return a.aliases(lo, hi) || b.aliases(lo, hi);
  }
  bool conflicts(const void* lo, const void* hi) const { return aliases(lo, hi); }
};

// ---- factories. All lazy; all [[nodiscard]] because a discarded expression does nothing.

namespace detail {

template <class Op, class A, class B>
[[nodiscard]] auto make_binary(A&& a, B&& b, Op op = {}) {
  check_compatible<A, B>();
  check_elementwise<A>();
  check_elementwise<B>();
  require_same_shape(Op::name, a.shape(), b.shape());
  return Binary<Op, A, B>{std::forward<A>(a), std::forward<B>(b), op};
}

template <class E, class S>
[[nodiscard]] auto constant_like(const E& e, S s) {
  return Constant<value_t<E>, backend_t<E>>{e.shape(), static_cast<value_t<E>>(s)};
}

template <class Op, class A>
[[nodiscard]] auto make_unary(A&& a, Op op = {}) {
  check_elementwise<A>();
  return Unary<Op, A>{std::forward<A>(a), op};
}

}  // namespace detail

template <class S>
concept ScalarValue = std::is_arithmetic_v<S>;

namespace detail {
/// An expression E next to something that is neither an expression nor a scalar: the
/// operators below reject it with a readable message instead of a list of candidates.
template <class E, class X>
concept NonOperand = Expression<E> && !Expression<X> && !ScalarValue<std::remove_cvref_t<X>>;
}  // namespace detail

#define SIAM_BINARY_OPERATOR(sym, op)                                           \
  template <Expression A, Expression B>                                         \
  [[nodiscard]] auto operator sym(A&& a, B&& b) {                               \
    return detail::make_binary<fn::op>(std::forward<A>(a), std::forward<B>(b)); \
  }                                                                             \
  template <Expression A, ScalarValue S>                                        \
  [[nodiscard]] auto operator sym(A&& a, S s) {                                 \
    auto c = detail::constant_like(a, s);                                       \
    return detail::make_binary<fn::op>(std::forward<A>(a), std::move(c));       \
  }                                                                             \
  template <ScalarValue S, Expression B>                                        \
  [[nodiscard]] auto operator sym(S s, B&& b) {                                 \
    auto c = detail::constant_like(b, s);                                       \
    return detail::make_binary<fn::op>(std::move(c), std::forward<B>(b));       \
  }                                                                             \
  template <class A, class B>                                                   \
  requires detail::NonOperand<A, B> || detail::NonOperand<B, A>                 \
  void operator sym(A&&, B&&) {                                                 \
    static_assert(!std::is_same_v<A, A>,                                        \
                  "siam: an expression combines only "                          \
                  "with a siam expression (Tensor, View, or an expression of "  \
                  "them) or an arithmetic scalar");                             \
  }

SIAM_BINARY_OPERATOR(+, add)
SIAM_BINARY_OPERATOR(-, sub)
SIAM_BINARY_OPERATOR(*, mul)
SIAM_BINARY_OPERATOR(/, div)
#undef SIAM_BINARY_OPERATOR

template <Expression A>
[[nodiscard]] auto operator-(A&& a) {
  return detail::make_unary<fn::neg>(std::forward<A>(a));
}

#define SIAM_UNARY_FUNCTION(name)                            \
  template <Expression A>                                    \
  [[nodiscard]] auto name(A&& a) {                           \
    return detail::make_unary<fn::name>(std::forward<A>(a)); \
  }
SIAM_UNARY_FUNCTION(exp)
SIAM_UNARY_FUNCTION(log)
SIAM_UNARY_FUNCTION(sqrt)
SIAM_UNARY_FUNCTION(square)
SIAM_UNARY_FUNCTION(relu)
SIAM_UNARY_FUNCTION(step)
SIAM_UNARY_FUNCTION(finite)
SIAM_UNARY_FUNCTION(abs)
SIAM_UNARY_FUNCTION(tanh)
SIAM_UNARY_FUNCTION(sigmoid)
SIAM_UNARY_FUNCTION(softplus)
#undef SIAM_UNARY_FUNCTION

/// a^p elementwise for a scalar exponent p.
template <Expression A, ScalarValue S>
[[nodiscard]] auto pow(A&& a, S p) {
  return detail::make_unary(std::forward<A>(a), fn::pow<value_t<A>>{static_cast<value_t<A>>(p)});
}
/// min(max(a, lo), hi) elementwise.
template <Expression A, ScalarValue S>
[[nodiscard]] auto clamp(A&& a, S lo, S hi) {
  using T = value_t<A>;
  return detail::make_unary(std::forward<A>(a),
                            fn::clamp<T>{static_cast<T>(lo), static_cast<T>(hi)});
}
/// clamp's backward: dy where lo <= x <= hi, else 0.
template <Expression A, Expression B, ScalarValue S>
[[nodiscard]] auto clamp_grad(A&& dy, B&& x, S lo, S hi) {
  using T = value_t<A>;
  return detail::make_binary(std::forward<A>(dy), std::forward<B>(x),
                             fn::clamp_grad<T>{static_cast<T>(lo), static_cast<T>(hi)});
}
/// |x|'s backward: dy sign(x).
template <Expression A, Expression B>
[[nodiscard]] auto abs_grad(A&& dy, B&& x) {
  return detail::make_binary<fn::abs_grad>(std::forward<A>(dy), std::forward<B>(x));
}
/// 1 where a >= b, else 0.
template <Expression A, Expression B>
[[nodiscard]] auto ge_mask(A&& a, B&& b) {
  return detail::make_binary<fn::ge_mask>(std::forward<A>(a), std::forward<B>(b));
}

/// dy where x > 0, else 0: ReLU's backward given its input or output x.
template <Expression A, Expression B>
[[nodiscard]] auto relu_grad(A&& dy, B&& x) {
  return detail::make_binary<fn::relu_grad>(std::forward<A>(dy), std::forward<B>(x));
}

/// a * b elementwise, exactly 0 wherever a is 0 (even where b is NaN or Inf).
template <Expression A, Expression B>
[[nodiscard]] auto mul_or_zero(A&& a, B&& b) {
  return detail::make_binary<fn::mul_or_zero>(std::forward<A>(a), std::forward<B>(b));
}
/// max(a, b) and min(a, b) elementwise (same shapes).
template <Expression A, Expression B>
[[nodiscard]] auto maximum(A&& a, B&& b) {
  return detail::make_binary<fn::max>(std::forward<A>(a), std::forward<B>(b));
}
template <Expression A, Expression B>
[[nodiscard]] auto minimum(A&& a, B&& b) {
  return detail::make_binary<fn::min>(std::forward<A>(a), std::forward<B>(b));
}

/// max(a, s) and min(a, s) elementwise with a scalar.
template <Expression A, ScalarValue S>
[[nodiscard]] auto maximum(A&& a, S s) {
  auto c = detail::constant_like(a, s);
  return detail::make_binary<fn::max>(std::forward<A>(a), std::move(c));
}
template <Expression A, ScalarValue S>
[[nodiscard]] auto minimum(A&& a, S s) {
  auto c = detail::constant_like(a, s);
  return detail::make_binary<fn::min>(std::forward<A>(a), std::move(c));
}

/// Repeats a row vector (shape [C] or [1 x C]) over `rows` rows -> [rows x C].
template <Expression A>
[[nodiscard]] auto broadcast_rows(A&& a, index_t rows) {
  detail::check_elementwise<A>();
  const Shape s = a.shape();
  if (s.rows() != 1)
    throw shape_error("broadcast_rows: operand " + s.str() + " is not a row vector");
  return Broadcast<A, 0>{std::forward<A>(a), Shape{rows, s.cols()}};
}
/// Repeats a column (shape [R x 1]) over `cols` columns -> [R x cols].
template <Expression A>
[[nodiscard]] auto broadcast_cols(A&& a, index_t cols) {
  detail::check_elementwise<A>();
  const Shape s = a.shape();
  if (s.cols() != 1 || s.rank() != 2)
    throw shape_error("broadcast_cols: operand " + s.str() + " is not an R x 1 column");
  return Broadcast<A, 1>{std::forward<A>(a), Shape{s.rows(), cols}};
}
/// Repeats a one-element tensor over `shape` (keeps a device scalar on the device).
template <Expression A>
[[nodiscard]] auto broadcast_scalar(A&& a, Shape shape) {
  detail::check_elementwise<A>();
  if (a.shape().size() != 1)
    throw shape_error("broadcast_scalar: operand " + a.shape().str() +
                      " has more than one element");
  return Broadcast<A, 2>{std::forward<A>(a), shape};
}

/// Sum of all elements -> [1].
template <Expression A>
[[nodiscard]] auto sum_all(A&& a) {
  detail::check_elementwise<A>();
  return Sum<A, 0>{std::forward<A>(a)};
}
/// Sum over the rows (one total per column) -> [C]; the bias gradient of x W + b.
template <Expression A>
[[nodiscard]] auto sum_rows(A&& a) {
  detail::check_elementwise<A>();
  return Sum<A, 1>{std::forward<A>(a)};
}
/// Sum over the columns (one total per row) -> [R x 1].
template <Expression A>
[[nodiscard]] auto sum_cols(A&& a) {
  detail::check_elementwise<A>();
  return Sum<A, 2>{std::forward<A>(a)};
}

/// Largest element of each row -> [R x 1] (log-sum-exp's shift). Not accumulable.
template <Expression A>
[[nodiscard]] auto max_cols(A&& a) {
  detail::check_elementwise<A>();
  return Sum<A, 3>{std::forward<A>(a)};
}

/// The transpose of a matrix (rows x cols as every tensor is seen) -> [cols x rows].
template <Expression A>
[[nodiscard]] auto transpose(A&& a) {
  detail::check_elementwise<A>();
  return Transpose<A>{std::forward<A>(a)};
}

/// op(A) op(B) for row-major matrices; throws shape_error if inner dimensions differ.
template <Expression A, Expression B>
[[nodiscard]] auto matmul(A&& a, B&& b, bool trans_a = false, bool trans_b = false) {
  detail::check_compatible<A, B>();
  static_assert(Storage<A> && Storage<B>,
                "siam: matmul operands must be tensors or views (it is a forced node that "
                "calls GEMM on real buffers); assign the expression to a Tensor first");
  Matmul<A, B> m{std::forward<A>(a), std::forward<B>(b), trans_a, trans_b};
  const index_t kb = trans_b ? m.b.shape().cols() : m.b.shape().rows();
  if (m.a.shape().rank() != 2 || m.b.shape().rank() != 2 || m.k() != kb)
    throw shape_error(std::string("matmul: cannot multiply ") + m.a.shape().str() +
                      (trans_a ? "^T" : "") + " by " + m.b.shape().str() + (trans_b ? "^T" : ""));
  return m;
}

}  // namespace siam

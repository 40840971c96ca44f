// Tensor<T, Backend>: owning, contiguous, row-major storage on a backend, rank 1 to 5.
// Moves are cheap; copies are explicit (`Tensor b(a)` or `b = a`, never implicit
// through a by-value parameter). Assigning an expression evaluates it, in one pass,
// into the existing buffer when it is large enough (no allocation).
//
// View<T, Backend>: a non-owning window of whole rows of a tensor (the Siamese trainer
// splits its stacked batch this way). It must not outlive the tensor it views.
#pragma once

#include <concepts>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "siam/assign.hpp"
#include "siam/backend_concept.hpp"

namespace siam {

template <class T>
concept Scalar = std::same_as<T, float> || std::same_as<T, double>;

template <class T, class B>
class Tensor;

namespace detail {
// Shared leaf behaviour of Tensor and View.
template <class T, class B, class Self>
struct LeafOps {
  using siam_expression = void;
  using value_type = T;
  using backend_type = B;
  static constexpr int kind = elementwise;
  static constexpr bool broadcasts = false;

  LeafKernel<T> kernel() const { return {self().data(), self().shape().cols()}; }
  bool aliases(const void* lo, const void* hi) const {
    return LeafRef<T, B>(self().data(), self().shape()).aliases(lo, hi);
  }
  bool conflicts(const void* lo, const void* hi) const {
    return LeafRef<T, B>(self().data(), self().shape()).conflicts(lo, hi);
  }
  index_t rows() const { return self().shape().rows(); }
  index_t cols() const { return self().shape().cols(); }
  index_t size() const { return self().shape().size(); }
  bool empty() const { return size() == 0; }

  /// Copies the contents to a std::vector on the host.
  std::vector<T> to_vector() const {
    std::vector<T> v(static_cast<std::size_t>(size()));
    B::to_host(v.data(), self().data(), size());
    return v;
  }
  /// The single value of a one-element tensor (synchronises a device backend).
  T item() const {
    if (size() != 1) throw shape_error("item: tensor " + self().shape().str() + " is not a scalar");
    T v;
    B::to_host(&v, self().data(), 1);
    return v;
  }

 private:
  const Self& self() const { return static_cast<const Self&>(*this); }
};
}  // namespace detail

template <class T, class B>
class View : public detail::LeafOps<T, B, View<T, B>> {
  static_assert(Scalar<T>, "siam: tensors hold float or double");
  static_assert(detail::check_backend<B, T>());

 public:
  View(T* data, Shape shape) : data_(data), shape_(shape) {}
  View(const View&) = default;

  /// Element-wise copy of another view's contents (shapes must match), like Eigen's Map.
  View& operator=(const View& o) { return assign(o, false); }
  template <Expression E>
  View& operator=(E&& e) {
    return assign(e, false);
  }
  template <Expression E>
  View& operator+=(E&& e) {
    return assign(e, true);
  }

  T* data() const { return data_; }
  Shape shape() const { return shape_; }
  /// Rows [begin, begin + count) as a view.
  View row_slice(index_t begin, index_t count) const {
    if (begin < 0 || count < 0 || begin + count > this->rows())
      throw shape_error("row_slice: rows [" + std::to_string(begin) + ", " +
                        std::to_string(begin + count) + ") out of " + shape_.str());
    return View(data_ + begin * this->cols(), shape_.with_rows(count));
  }
  T& operator()(index_t r, index_t c) const requires B::is_host {
    return data_[r * this->cols() + c];
  }

 private:
  template <class E>
  View& assign(const E& e, bool accumulate) {
    detail::check_compatible<View, E>();
    require_same_shape("assignment to view", shape_, e.shape());
    const void* lo = data_;
    const void* hi = data_ + shape_.size();
    if (detail::needs_temporary(e, lo, hi)) {
      Tensor<T, B> tmp(e);
      detail::evaluate(detail::Dest<T, B>{data_, shape_}, tmp, accumulate);
    } else {
      detail::evaluate(detail::Dest<T, B>{data_, shape_}, e, accumulate);
    }
    return *this;
  }

  T* data_;
  Shape shape_;
};

template <class T, class B>
class Tensor : public detail::LeafOps<T, B, Tensor<T, B>> {
  static_assert(Scalar<T>, "siam: tensors hold float or double");
  static_assert(detail::check_backend<B, T>());

 public:
  Tensor() = default;
  /// A zero-filled tensor of the given shape.
  explicit Tensor(Shape shape) : Tensor(uninitialized(shape)) { fill(T(0)); }
  /// A tensor with unspecified contents (for buffers about to be overwritten).
  static Tensor uninitialized(Shape shape) {
    Tensor t;
    t.reserve(shape.size());
    t.shape_ = shape;
    return t;
  }
  /// A tensor holding `values` (row-major, size must match the shape).
  static Tensor from(Shape shape, std::span<const T> values) {
    if (static_cast<index_t>(values.size()) != shape.size())
      throw shape_error("Tensor::from: " + std::to_string(values.size()) + " values for shape " +
                        shape.str());
    Tensor t = uninitialized(shape);
    B::from_host(t.data_, values.data(), shape.size());
    return t;
  }
  static Tensor from(Shape shape, std::initializer_list<T> values) {
    return from(shape, std::span<const T>(values.begin(), values.size()));
  }

  Tensor(Tensor&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        capacity_(std::exchange(o.capacity_, 0)),
        shape_(std::exchange(o.shape_, Shape{})) {}
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      capacity_ = std::exchange(o.capacity_, 0);
      shape_ = std::exchange(o.shape_, Shape{});
    }
    return *this;
  }
  /// Deep copy; explicit so that tensors are never copied by accident.
  explicit Tensor(const Tensor& o) : Tensor(uninitialized(o.shape_)) {
    B::copy(data_, o.data_, o.size());
  }
  /// Copy-assignment evaluates `o` like any expression (reuses this buffer).
  Tensor& operator=(const Tensor& o) { return assign(o, false); }

  /// Evaluates an expression into a new tensor.
  template <Expression E>
  requires(!std::same_as<std::remove_cvref_t<E>, Tensor>)
      Tensor(E&& e) {  // NOLINT: implicit, so that `Tensor t = a + b;` reads naturally
    assign(e, false);
  }
  template <Expression E>
  requires(!std::same_as<std::remove_cvref_t<E>, Tensor>) Tensor& operator=(E&& e) {
    return assign(e, false);
  }
  /// this += e (for a matmul: GEMM with beta = 1). Shapes must match.
  template <Expression E>
  Tensor& operator+=(E&& e) {
    require_same_shape("+=", shape_, e.shape());
    return assign(e, true);
  }

  ~Tensor() { release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  Shape shape() const { return shape_; }
  index_t capacity() const { return capacity_; }

  /// Changes the shape; keeps the buffer (and contents, as a flat array) when it is
  /// large enough, so a reused workspace stops allocating after its first use.
  void resize(Shape shape) {
    if (shape.size() > capacity_) {
      release();
      reserve(shape.size());
    }
    shape_ = shape;
  }
  /// Same elements, new shape of equal size.
  void reshape(Shape shape) {
    if (shape.size() != shape_.size())
      throw shape_error("reshape: " + shape_.str() + " has " + std::to_string(shape_.size()) +
                        " elements, " + shape.str() + " needs " + std::to_string(shape.size()));
    shape_ = shape;
  }
  void fill(T v) { detail::evaluate(dest(), Constant<T, B>{shape_, v}, false); }

  View<T, B> view() { return View<T, B>(data_, shape_); }
  View<T, B> row_slice(index_t begin, index_t count) { return view().row_slice(begin, count); }
  /// Read-only row slice: a leaf usable in expressions.
  detail::LeafRef<T, B> row_slice(index_t begin, index_t count) const {
    View<T, B> v = const_cast<Tensor*>(this)->row_slice(begin, count);
    return detail::LeafRef<T, B>(v.data(), v.shape());
  }

  T& operator()(index_t r, index_t c) requires B::is_host { return data_[r * this->cols() + c]; }
  const T& operator()(index_t r, index_t c) const requires B::is_host {
    return data_[r * this->cols() + c];
  }
  T& operator[](index_t i) requires B::is_host { return data_[i]; }
  const T& operator[](index_t i) const requires B::is_host { return data_[i]; }

  /// A copy on another backend (or the same one). Exactly one side must be the host
  /// unless both backends are the same.
  template <class B2>
  Tensor<T, B2> to() const {
    Tensor<T, B2> out = Tensor<T, B2>::uninitialized(shape_);
    if constexpr (std::same_as<B, B2>)
      B::copy(out.data(), data_, this->size());
    else if constexpr (B2::is_host)
      B::to_host(out.data(), data_, this->size());
    else {
      static_assert(B::is_host, "siam: copies between two device backends go through the host");
      B2::from_host(out.data(), data_, this->size());
    }
    return out;
  }

  detail::Dest<T, B> dest() { return {data_, shape_}; }

 private:
  void reserve(index_t n) {
    data_ = B::template allocate<T>(n);
    capacity_ = n;
  }
  void release() noexcept {
    B::deallocate(data_, capacity_);
    data_ = nullptr;
    capacity_ = 0;
  }

  template <class E>
  Tensor& assign(const E& e, bool accumulate) {
    detail::check_compatible<Tensor, E>();
    const Shape s = e.shape();
    const void* lo = data_;
    const void* hi = data_ + s.size();
    // A new buffer is needed if this one is too small, or if the expression reads this
    // buffer in a way an in-place write would corrupt (broadcasts, reductions, GEMM).
    if (s.size() > capacity_ || (data_ && detail::needs_temporary(e, lo, hi))) {
      Tensor fresh = uninitialized(s);
      if (accumulate) B::copy(fresh.data_, data_, s.size());
      detail::evaluate(fresh.dest(), e, accumulate);
      *this = std::move(fresh);
      return *this;
    }
    shape_ = s;
    detail::evaluate(dest(), e, accumulate);
    return *this;
  }

  T* data_ = nullptr;
  index_t capacity_ = 0;
  Shape shape_{};
};

}  // namespace siam

namespace siam {

/// One (destination, expression) pair of a fused multi-assignment.
template <class T, class B, class E>
struct Assignment {
  View<T, B> dst;
  detail::closure_t<E> e;
};

/// Pairs a destination with the expression to store in it, for fused().
template <class T, class B, Elementwise E>
[[nodiscard]] Assignment<T, B, E> assign_to(View<T, B> dst, E&& e) {
  detail::check_compatible<View<T, B>, E>();
  static_assert(!std::remove_cvref_t<E>::broadcasts,
                "siam: fused() runs flat loops; broadcasts are not supported in it");
  require_same_shape("fused assignment", dst.shape(), e.shape());
  return {dst, std::forward<E>(e)};
}

/// Runs several same-size assignments in ONE pass: at each index, the expressions are
/// evaluated and stored in the order given, so a later expression reads the new value
/// of an earlier destination at that index (Adam updates m, v, then the parameter).
template <class T, class B, class... E>
void fused(const Assignment<T, B, E>&... a) {
  const index_t n = (a.dst.size(), ...);
  if (((a.dst.size() != n) || ...))
    throw shape_error("fused: all destinations must have the same size");
  B::template assign_fused<T>(n, std::pair{a.dst.data(), a.e.kernel()}...);
}

/// The (destination, kernel) pairs of one fused multi-assignment as a plain recursive
/// struct, so a device kernel can run it (std::tuple is not usable in device code).
template <class... P>
struct PairList {
  SIAM_HD void run(index_t) const {}
};
template <class P, class... R>
struct PairList<P, R...> {
  P head;
  PairList<R...> tail;
  SIAM_HD void run(index_t i) const {
    head.first[i] = head.second(0, i);
    tail.run(i);
  }
};

inline PairList<> make_pair_list() {
  return {};
}
template <class H, class... R>
PairList<H, R...> make_pair_list(H h, R... r) {
  return {h, make_pair_list(r...)};
}

/// Calls f(pair0, pair1, ...) with the pairs of a PairList as separate arguments.
template <class F, class... Done>
void apply_pairs(const PairList<>&, F&& f, const Done&... done) {
  f(done...);
}
template <class F, class H, class... R, class... Done>
void apply_pairs(const PairList<H, R...>& pl, F&& f, const Done&... done) {
  apply_pairs(pl.tail, f, done..., pl.head);
}

/// One fused multi-assignment of n elements, packaged for fused_batch().
template <class PL>
struct FusedGroup {
  index_t n;
  PL pairs;
};

/// Packages assignments like fused() does, without running them.
template <class T, class B, class... E>
[[nodiscard]] auto fused_group(const Assignment<T, B, E>&... a) {
  const index_t n = (a.dst.size(), ...);
  if (((a.dst.size() != n) || ...))
    throw shape_error("fused_group: all destinations must have the same size");
  auto pairs = make_pair_list(std::pair{a.dst.data(), a.e.kernel()}...);
  return FusedGroup<decltype(pairs)>{n, pairs};
}

/// Runs several groups of the same expression types over different tensors as one
/// batch: one pass per group on the CPU, ONE kernel launch for all on a GPU (Adam
/// updates every parameter of a network this way).
template <class T, class B, class G>
void fused_batch(const G* groups, std::size_t count) {
  B::template assign_fused_batch<T>(groups, count);
}

}  // namespace siam

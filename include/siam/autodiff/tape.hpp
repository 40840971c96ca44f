// Reverse-mode autodiff. A Tape is an ordinary object owned by the caller: forward ops
// append nodes to it, `backward(loss)` runs them in reverse and accumulates gradients,
// `reset()` forgets the graph but keeps every buffer, so a training loop whose graph
// has the same shapes each step allocates nothing after its first step.
//
// Values and gradients live in slots; a Var is a (tape, slot) handle. Parameters live
// outside the tape (they persist across steps) and are attached with `param()`.
// Gradients accumulate: the first contribution to a gradient assigns, later ones add,
// so a weight used by both branches of a Siamese pair receives the sum of both.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "siam/tensor.hpp"

namespace siam {

/// A trainable tensor with its gradient. `grad_fresh` means "the gradient is zero":
/// zero_grad() only sets the flag and the first backward contribution assigns.
template <class T, class B>
struct Parameter {
  Tensor<T, B> value;
  Tensor<T, B> grad;
  bool grad_fresh = true;
  std::string name;

  Parameter() = default;
  Parameter(std::string n, Tensor<T, B> v)
      : value(std::move(v)), grad(Tensor<T, B>::uninitialized(value.shape())), name(std::move(n)) {}

  void zero_grad() { grad_fresh = true; }
  /// The gradient, materialising zeros if nothing was accumulated since zero_grad().
  Tensor<T, B>& gradient() {
    if (grad.shape() != value.shape()) grad.resize(value.shape());
    if (grad_fresh) {
      grad.fill(T(0));
      grad_fresh = false;
    }
    return grad;
  }
};

template <class T, class B>
class Tape;

/// Handle to a value recorded on a tape. Cheap to copy; valid until the tape's reset().
template <class T, class B>
class Var {
 public:
  Var() = default;
  Var(Tape<T, B>* tape, std::uint32_t id) : tape_(tape), id_(id) {}
  Tape<T, B>& tape() const { return *tape_; }
  std::uint32_t id() const { return id_; }
  View<T, B> value() const { return tape_->value(id_); }
  Shape shape() const { return tape_->shape(id_); }
  bool requires_grad() const { return tape_->requires_grad(id_); }
  /// The accumulated gradient after backward() (throws if none flowed here).
  View<T, B> grad() const { return tape_->grad(id_); }

 private:
  Tape<T, B>* tape_ = nullptr;
  std::uint32_t id_ = 0;
};

template <class T, class B>
class Tape {
 public:
  struct Node;
  using BackwardFn = void (*)(Tape&, const Node&);
  /// The most tape inputs one node can name (checked at compile time by record()).
  static constexpr std::size_t max_inputs = 8;
  /// One recorded op: what its backward needs and nothing else.
  struct Node {
    BackwardFn backward;
    std::uint32_t out;
    std::uint32_t n_in;
    std::uint32_t in[max_inputs];
    T s[4];        // scalars the backward needs (margin, scale, ...)
    index_t i[4];  // integers the backward needs (offsets, index-set ids, ...)
  };
  /// Default bound on the nodes recorded between two reset() calls (see set_max_nodes).
  static constexpr std::size_t default_max_nodes = std::size_t{1} << 16;

  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// Forgets the graph; keeps every buffer for the next step.
  void reset() {
    used_ = 0;
    index_used_ = 0;
    nodes_.clear();
  }
  bool recording() const { return recording_; }
  std::size_t node_count() const { return nodes_.size(); }
  /// Values (slots) recorded since the last reset().
  std::size_t value_count() const { return used_; }
  /// Bytes of the buffers the tape holds (values and gradients, kept across reset()).
  std::size_t bytes() const {
    std::size_t n = 0;
    for (const Slot& s : slots_)
      n += static_cast<std::size_t>(s.store.capacity() + s.store_grad.capacity());
    return n * sizeof(T);
  }

  /// A training loop that forgets reset() grows the tape by one graph per step, and its
  /// memory with it; past this many nodes (or 8x as many values) record() throws
  /// value_error instead. 0 lifts the bound (for graphs that are really that large).
  void set_max_nodes(std::size_t n) { max_nodes_ = n; }
  std::size_t max_nodes() const { return max_nodes_; }

  // ---- leaves

  /// A value the graph reads but never differentiates (data, labels). Not copied: it
  /// must stay alive and unchanged until backward() has run.
  Var<T, B> constant(const Tensor<T, B>& t) {
    return external(const_cast<T*>(t.data()), t.shape());
  }
  Var<T, B> constant(View<T, B> v) { return external(v.data(), v.shape()); }
  /// Rejected at compile time: the tape keeps a pointer to a constant's storage, and a
  /// temporary tensor is gone before backward() reads it.
  template <class U>
  requires std::is_same_v<std::remove_cvref_t<U>, Tensor<T, B>> &&
      (!std::is_lvalue_reference_v<U>)Var<T, B> constant(U&&) {
    static_assert(!sizeof(U),
                  "siam: tape.constant() does not copy its argument and the tape reads it "
                  "until backward(); keep the tensor in a named variable (or use "
                  "tape.copy() to let the tape own a copy)");
    return {};
  }
  /// A constant the tape owns: `t` is copied into a tape buffer (reused after reset()).
  template <Expression E>
  Var<T, B> copy(const E& e) {
    Var<T, B> v = make(e.shape(), false);
    v.value() = e;
    return v;
  }
  /// A parameter: its gradient accumulates into p.grad (honouring p.grad_fresh).
  Var<T, B> param(Parameter<T, B>& p) {
    Var<T, B> v = external(p.value.data(), p.value.shape());
    Slot& s = slots_[v.id()];
    if (p.grad.shape() != p.value.shape()) p.grad.resize(p.value.shape());
    s.grad = p.grad.data();
    s.ext_fresh = &p.grad_fresh;
    s.requires_grad = recording_;
    return v;
  }

  // ---- what ops use

  /// A new slot owning a value of `shape` (contents unspecified until written).
  Var<T, B> make(Shape shape, bool requires_grad) {
    Slot& s = next_slot();
    s.store.resize(shape);
    s.value = s.store.data();
    s.shape = shape;
    s.requires_grad = requires_grad && recording_;
    return {this, used_ - 1};
  }
  /// A slot whose value is a window into another slot's value (row slices).
  Var<T, B> alias(T* data, Shape shape, bool requires_grad) {
    Var<T, B> v = external(data, shape);
    slots_[v.id()].requires_grad = requires_grad && recording_;
    return v;
  }
  /// Records a node if its output needs a gradient (nothing is recorded under NoGrad).
  /// `in` lists the ids of the slots its backward reads or writes: `{a.id(), b.id()}`;
  /// its length is checked at compile time. Returns the node, so that an op can store
  /// more scalars or integers in it, or null when nothing was recorded. The pointer is
  /// valid until the next record().
  template <std::size_t N>
  Node* record(BackwardFn fn, Var<T, B> out, const std::uint32_t (&in)[N], T s0 = 0, T s1 = 0) {
    static_assert(N <= max_inputs,
                  "siam: a tape node names at most Tape::max_inputs inputs; keep the rest in "
                  "slots of their own or split the op");
    if (!slots_[out.id()].requires_grad) return nullptr;
    if (max_nodes_ && nodes_.size() >= max_nodes_) throw_too_large("nodes", nodes_.size());
    Node n{fn, out.id(), static_cast<std::uint32_t>(N), {}, {s0, s1, 0, 0}, {0, 0, 0, 0}};
    for (std::size_t k = 0; k < N; ++k)
      n.in[k] = in[k];
    nodes_.push_back(n);
    return &nodes_.back();
  }

  /// Copies a set of row indices (gather, mining) into the tape, which keeps them until
  /// reset() (buffers are reused afterwards); returns its id for Node::i.
  index_t store_indices(std::span<const std::uint32_t> idx) {
    if (index_used_ == index_sets_.size()) index_sets_.emplace_back();
    auto& v = index_sets_[index_used_];
    v.assign(idx.begin(), idx.end());
    return static_cast<index_t>(index_used_++);
  }
  std::span<const std::uint32_t> indices(index_t id) const {
    return index_sets_.at(static_cast<std::size_t>(id));
  }

  View<T, B> value(std::uint32_t id) const {
    const Slot& s = slots_.at(id);
    return View<T, B>(s.value, s.shape);
  }
  Shape shape(std::uint32_t id) const { return slots_.at(id).shape; }
  bool requires_grad(std::uint32_t id) const { return slots_.at(id).requires_grad; }
  View<T, B> grad(std::uint32_t id) {
    Slot& s = slots_.at(id);
    if (!s.requires_grad) throw value_error("grad: this value does not require a gradient");
    if (fresh(s)) throw value_error("grad: no gradient reached this value in backward()");
    return View<T, B>(s.grad, s.shape);
  }
  /// Whether slot `id` received any gradient yet in this backward pass.
  bool has_grad(std::uint32_t id) const { return !fresh(slots_[id]); }

  /// grad(id) (+)= e: assigns on the first contribution, adds afterwards. Skips inputs
  /// that need no gradient (data, constants). e has the value's shape, or the same
  /// rows x cols (the matrix every tensor is also seen as).
  template <Expression E>
  void accumulate(std::uint32_t id, const E& e) {
    Slot& s = slots_[id];
    if (!s.requires_grad) return;
    // A matrix-shaped expression may update a higher-rank value seen as a matrix.
    const Shape es = e.shape();
    const bool as_matrix =
        !(es == s.shape) && es.rows() == s.shape.rows() && es.cols() == s.shape.cols();
    View<T, B> g(s.grad, as_matrix ? es : s.shape);
    if (fresh(s))
      g = e;
    else
      g += e;
    fresh(s) = false;
  }
  /// The gradient buffer of `id` for an op that writes it itself; `accumulate` tells it
  /// whether to add (true) or assign (false). Marks it as written.
  View<T, B> grad_for_write(std::uint32_t id, bool& accumulate) {
    Slot& s = slots_[id];
    accumulate = !fresh(s);
    fresh(s) = false;
    return View<T, B>(s.grad, s.shape);
  }
  /// The incoming gradient of a node's output (read-only for the backward).
  View<T, B> out_grad(const Node& n) { return View<T, B>(slots_[n.out].grad, slots_[n.out].shape); }

  // ---- the reverse pass

  /// Seeds d loss / d loss = 1 and runs every recorded node in reverse order.
  void backward(Var<T, B> loss) {
    if (loss.shape().size() != 1)
      throw shape_error("backward: the loss must have one element, got " + loss.shape().str());
    for (std::uint32_t i = 0; i < used_; ++i) {
      Slot& s = slots_[i];
      if (!s.requires_grad || s.ext_fresh) continue;
      s.store_grad.resize(s.shape);
      s.grad = s.store_grad.data();
      s.own_fresh = true;
    }
    Slot& l = slots_[loss.id()];
    if (!l.requires_grad) throw value_error("backward: the loss does not depend on any parameter");
    View<T, B>(l.grad, l.shape) = Constant<T, B>{l.shape, T(1)};
    fresh(l) = false;
    for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it)
      if (!fresh(slots_[it->out])) it->backward(*this, *it);
  }

 private:
  template <class, class>
  friend class NoGrad;

  struct Slot {
    Tensor<T, B> store, store_grad;  // owned buffers, kept across reset()
    T* value = nullptr;
    T* grad = nullptr;
    Shape shape;
    bool requires_grad = false;
    bool own_fresh = true;
    bool* ext_fresh = nullptr;  // a parameter's grad_fresh, else null
  };
  // "Nothing accumulated yet" flag of a slot: its own, or its parameter's.
  static bool& fresh(Slot& s) { return s.ext_fresh ? *s.ext_fresh : s.own_fresh; }
  static bool fresh(const Slot& s) { return s.ext_fresh ? *s.ext_fresh : s.own_fresh; }

  [[noreturn]] void throw_too_large(const char* what, std::size_t n) const {
    throw value_error("Tape: " + std::to_string(n) + " " + what +
                      " recorded without reset(); a training loop must call tape.reset() "
                      "before each step (raise the bound with set_max_nodes() if the graph is "
                      "really this large, or 0 to lift it)");
  }
  Slot& next_slot() {
    if (max_nodes_ && used_ >= 8 * max_nodes_) throw_too_large("values", used_);
    if (used_ == slots_.size()) slots_.emplace_back();
    Slot& s = slots_[used_++];
    s.own_fresh = true;
    s.ext_fresh = nullptr;
    s.grad = nullptr;
    return s;
  }
  Var<T, B> external(T* data, Shape shape) {
    Slot& s = next_slot();
    s.value = data;
    s.shape = shape;
    s.requires_grad = false;
    return {this, used_ - 1};
  }

  // std::vector may move slots when it grows: only ids are handed out, never pointers
  // into it, and slots hold no pointers to themselves.
  std::vector<Slot> slots_;
  std::uint32_t used_ = 0;
  std::vector<Node> nodes_;
  std::vector<std::vector<std::uint32_t>> index_sets_;
  std::size_t index_used_ = 0;
  std::size_t max_nodes_ = default_max_nodes;
  bool recording_ = true;
};

/// While alive, ops on `tape` compute values only: no nodes, no gradients (inference).
template <class T, class B>
class NoGrad {
 public:
  explicit NoGrad(Tape<T, B>& t) : tape_(t), was_(t.recording_) { t.recording_ = false; }
  ~NoGrad() { tape_.recording_ = was_; }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Tape<T, B>& tape_;
  bool was_;
};

}  // namespace siam

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
#include <string>
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
  /// One recorded op: what its backward needs and nothing else.
  struct Node {
    BackwardFn backward;
    std::uint32_t out;
    std::uint32_t in[5];
    T s[2];  // scalars the backward needs (margin, scale, ...)
  };

  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// Forgets the graph; keeps every buffer for the next step.
  void reset() {
    used_ = 0;
    nodes_.clear();
  }
  bool recording() const { return recording_; }
  std::size_t node_count() const { return nodes_.size(); }

  // ---- leaves

  /// A value the graph reads but never differentiates (data, labels). Not copied: it
  /// must stay alive and unchanged until backward() has run.
  Var<T, B> constant(const Tensor<T, B>& t) {
    return external(const_cast<T*>(t.data()), t.shape());
  }
  Var<T, B> constant(View<T, B> v) { return external(v.data(), v.shape()); }
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
  /// Records a node if any input needs a gradient (nothing is recorded under NoGrad).
  void record(BackwardFn fn, Var<T, B> out, std::initializer_list<std::uint32_t> in, T s0 = 0,
              T s1 = 0) {
    if (!slots_[out.id()].requires_grad) return;
    Node n{fn, out.id(), {0, 0, 0, 0, 0}, {s0, s1}};
    int i = 0;
    for (auto id : in)
      n.in[i++] = id;
    nodes_.push_back(n);
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
  /// that need no gradient (data, constants).
  template <Expression E>
  void accumulate(std::uint32_t id, const E& e) {
    Slot& s = slots_[id];
    if (!s.requires_grad) return;
    View<T, B> g(s.grad, s.shape);
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

  Slot& next_slot() {
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

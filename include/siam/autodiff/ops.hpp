// Differentiable ops on tape variables. Each op is its forward and its backward side
// by side, with the gradient contract in one comment: given dy = dL/dy, what is added
// to the gradient of each input. Backwards only touch inputs that need a gradient
// (Tape::accumulate skips the rest), and run entirely through backend expressions
// and GEMM, so the same code runs on every backend.
#pragma once

#include <string>

#include "siam/autodiff/tape.hpp"

namespace siam {

namespace detail {
template <class T, class B>
void require_same_tape(const char* op, const Var<T, B>& a, const Var<T, B>& b) {
  if (&a.tape() != &b.tape())
    throw value_error(std::string(op) + ": operands were recorded on different tapes");
}
template <class T, class B>
bool any_grad(std::initializer_list<Var<T, B>> vs) {
  for (const auto& v : vs)
    if (v.requires_grad()) return true;
  return false;
}
}  // namespace detail

// ---- matmul: y = op(a) op(b).
// C = A B:      dA += dC B^T     dB += A^T dC
// C = A^T B:    dA += B dC^T     dB += A dC
// C = A B^T:    dA += dC B       dB += dC^T A
// C = A^T B^T:  dA += B^T dC^T   dB += dC^T A^T
template <class T, class B>
Var<T, B> matmul(Var<T, B> a, Var<T, B> b, bool trans_a = false, bool trans_b = false) {
  detail::require_same_tape("matmul", a, b);
  auto& t = a.tape();
  auto prod = matmul(a.value(), b.value(), trans_a, trans_b);  // checks shapes
  Var<T, B> y = t.make(prod.shape(), detail::any_grad({a, b}));
  y.value() = prod;
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const bool ta = n.s[0] != 0, tb = n.s[1] != 0;
        auto dc = tp.out_grad(n);
        auto A = tp.value(n.in[0]), Bv = tp.value(n.in[1]);
        if (tp.requires_grad(n.in[0])) {
          if (!ta)
            tp.accumulate(n.in[0], matmul(dc, Bv, false, !tb));
          else
            tp.accumulate(n.in[0], matmul(Bv, dc, tb, true));
        }
        if (tp.requires_grad(n.in[1])) {
          if (!tb)
            tp.accumulate(n.in[1], matmul(A, dc, !ta, false));
          else
            tp.accumulate(n.in[1], matmul(dc, A, true, ta));
        }
      },
      y, {a.id(), b.id()}, T(trans_a), T(trans_b));
  return y;
}

// ---- add / sub / mul (same shapes).
// y = a + b:  da += dy, db += dy.   y = a - b:  da += dy, db -= dy.
// y = a * b:  da += dy * b, db += dy * a.
template <class T, class B>
Var<T, B> operator+(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("add", a, b);
  auto& t = a.tape();
  auto e = a.value() + b.value();
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], tp.out_grad(n));
        tp.accumulate(n.in[1], tp.out_grad(n));
      },
      y, {a.id(), b.id()});
  return y;
}
template <class T, class B>
Var<T, B> operator-(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("sub", a, b);
  auto& t = a.tape();
  auto e = a.value() - b.value();
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], tp.out_grad(n));
        tp.accumulate(n.in[1], -tp.out_grad(n));
      },
      y, {a.id(), b.id()});
  return y;
}
template <class T, class B>
Var<T, B> operator*(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("mul", a, b);
  auto& t = a.tape();
  auto e = a.value() * b.value();
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) * tp.value(n.in[1]));
        tp.accumulate(n.in[1], tp.out_grad(n) * tp.value(n.in[0]));
      },
      y, {a.id(), b.id()});
  return y;
}

// ---- add_bias: y = x + 1 b (b a row vector [C] broadcast over the N rows of x).
// dx += dy;  db += sum over rows of dy.
template <class T, class B>
Var<T, B> add_bias(Var<T, B> x, Var<T, B> b) {
  detail::require_same_tape("add_bias", x, b);
  auto& t = x.tape();
  auto e = x.value() + broadcast_rows(b.value(), x.shape().rows());
  Var<T, B> y = t.make(e.shape(), detail::any_grad({x, b}));
  y.value() = e;
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], tp.out_grad(n));
        tp.accumulate(n.in[1], sum_rows(tp.out_grad(n)));
      },
      y, {x.id(), b.id()});
  return y;
}

// ---- relu: y = max(x, 0);  dx += dy where y > 0, else 0 (relu_grad).
template <class T, class B>
Var<T, B> relu(Var<T, B> x) {
  auto& t = x.tape();
  Var<T, B> y = t.make(x.shape(), x.requires_grad());
  y.value() = relu(x.value());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], relu_grad(tp.out_grad(n), tp.value(n.out)));
      },
      y, {x.id()});
  return y;
}

// ---- add_relu: y = max(a + b, 0) (same shapes) as one op: a residual block's sum and its
// ReLU (nn::Residual followed by ReLU in a Sequential).
// g = dy where y > 0, else 0 (relu_grad: NaN passes as through relu);  da += g, db += g.
// The same values as relu(a + b) bit for bit, in one pass forward instead of two and no
// stored sum. Backward: g is written once, into a's gradient when that is fresh, and b's
// gradient takes it from there.
template <class T, class B>
Var<T, B> add_relu(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("add_relu", a, b);
  auto& t = a.tape();
  auto e = a.value() + b.value();  // checks shapes
  Var<T, B> y = t.make(e.shape(), detail::any_grad({a, b}));
  y.value() = relu(e);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        auto g = relu_grad(tp.out_grad(n), tp.value(n.out));
        if (!tp.requires_grad(n.in[0])) return tp.accumulate(n.in[1], g);
        bool acc = false;
        View<T, B> ga = tp.grad_for_write(n.in[0], acc);
        if (acc) {
          ga += g;
          tp.accumulate(n.in[1], g);
        } else {
          ga = g;
          tp.accumulate(n.in[1], ga);
        }
      },
      y, {a.id(), b.id()});
  return y;
}

// ---- square: y = x^2;  dx += 2 x dy.
template <class T, class B>
Var<T, B> square(Var<T, B> x) {
  auto& t = x.tape();
  Var<T, B> y = t.make(x.shape(), x.requires_grad());
  y.value() = square(x.value());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], T(2) * tp.value(n.in[0]) * tp.out_grad(n));
      },
      y, {x.id()});
  return y;
}

// ---- sqrt: y = sqrt(x);  dx += dy / (2 y)  (infinite at x = 0, as the math says).
template <class T, class B>
Var<T, B> sqrt(Var<T, B> x) {
  auto& t = x.tape();
  Var<T, B> y = t.make(x.shape(), x.requires_grad());
  y.value() = sqrt(x.value());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        tp.accumulate(n.in[0], tp.out_grad(n) / (T(2) * tp.value(n.out)));
      },
      y, {x.id()});
  return y;
}

// ---- slice_rows: y = x[begin : begin + count) (a view: no copy).
// dx[begin : begin + count) += dy; other rows of dx receive nothing.
template <class T, class B>
Var<T, B> slice_rows(Var<T, B> x, index_t begin, index_t count) {
  auto& t = x.tape();
  View<T, B> v = x.value().row_slice(begin, count);  // checks the range
  Var<T, B> y = t.alias(v.data(), v.shape(), x.requires_grad());
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        if (!tp.requires_grad(n.in[0])) return;
        bool acc;
        View<T, B> g = tp.grad_for_write(n.in[0], acc);
        if (!acc) g = Constant<T, B>{g.shape(), T(0)};
        g.row_slice(static_cast<index_t>(n.s[0]), tp.shape(n.out).rows()) += tp.out_grad(n);
      },
      y, {x.id()}, T(begin));
  return y;
}

// ---- concat_rows: y = [a; b] (same trailing shape).
// da += dy[0 : Na), db += dy[Na : Na + Nb).
template <class T, class B>
Var<T, B> concat_rows(Var<T, B> a, Var<T, B> b) {
  detail::require_same_tape("concat_rows", a, b);
  const Shape sa = a.shape(), sb = b.shape();
  if (sa.rank() == 1 || sa.rank() != sb.rank() || sa.cols() != sb.cols())
    throw shape_error("concat_rows: cannot stack " + sa.str() + " on " + sb.str());
  auto& t = a.tape();
  Var<T, B> y = t.make(sa.with_rows(sa.rows() + sb.rows()), detail::any_grad({a, b}));
  y.value().row_slice(0, sa.rows()) = a.value();
  y.value().row_slice(sa.rows(), sb.rows()) = b.value();
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        const index_t na = tp.shape(n.in[0]).rows(), nb = tp.shape(n.in[1]).rows();
        tp.accumulate(n.in[0], tp.out_grad(n).row_slice(0, na));
        tp.accumulate(n.in[1], tp.out_grad(n).row_slice(na, nb));
      },
      y, {a.id(), b.id()});
  return y;
}

namespace detail {
// y = act(x W + 1 b) for the forward passes below: in one GEMM whose epilogue adds the bias
// (and applies the ReLU) when the backend has one for this case (Cuda: cuBLASLt), else the
// GEMM into y and one in-place pass.
template <class T, class B>
void linear_forward(const View<T, B>& x, const View<T, B>& w, const View<T, B>& b, bool with_relu,
                    View<T, B>& y) {
  if constexpr (requires {
                  B::template gemm_bias<T>(true, 0, 0, 0, x.data(), 0, w.data(), 0, b.data(),
                                           y.data(), 0);
                }) {
    if (B::template gemm_bias<T>(with_relu, y.rows(), y.cols(), w.rows(), x.data(), x.cols(),
                                 w.data(), w.cols(), b.data(), y.data(), y.cols()))
      return;
  }
  y = matmul(x, w);
  if (with_relu)
    y = relu(y + broadcast_rows(b, y.rows()));
  else
    y = y + broadcast_rows(b, y.rows());
}
}  // namespace detail

// ---- linear: y = x W + 1 b (a dense layer, x [N x in], W [in x out], b [out]).
// dx += dy W^T;  dW += x^T dy;  db += sum over rows of dy.
// The GEMM writes y, then the bias is added in place: one extra pass, no temporary (or the
// bias rides in the GEMM's epilogue where the backend has one: detail::linear_forward).
template <class T, class B>
Var<T, B> linear(Var<T, B> x, Var<T, B> w, Var<T, B> b) {
  auto& t = x.tape();
  const Shape sw = w.shape();
  if (sw.rank() != 2 || b.shape().size() != sw[1] || b.shape().rows() != 1)
    throw shape_error("linear: weight " + sw.str() + " and bias " + b.shape().str() +
                      " do not form a layer");
  const Shape sy = matmul(x.value(), w.value()).shape();  // checks x against W
  Var<T, B> y = t.make(sy, detail::any_grad({x, w, b}));
  View<T, B> yv = y.value();
  detail::linear_forward(x.value(), w.value(), b.value(), false, yv);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        auto dy = tp.out_grad(n);
        tp.accumulate(n.in[1], matmul(tp.value(n.in[0]), dy, true, false));
        tp.accumulate(n.in[2], sum_rows(dy));
        tp.accumulate(n.in[0], matmul(dy, tp.value(n.in[1]), false, true));
      },
      y, {x.id(), w.id(), b.id()});
  return y;
}

// ---- linear_relu: h = max(x W + 1 b, 0), a dense layer fused with its ReLU.
// dz = dh * [h > 0];  dx += dz W^T;  dW += x^T dz;  db += sum over rows of dz.
// Forward: GEMM into h, then bias and ReLU in one in-place pass (or all in the GEMM's
// epilogue, detail::linear_forward). Backward: dz
// overwrites dh in place (dh has no other reader) in the same pass that sums db.
template <class T, class B>
Var<T, B> linear_relu(Var<T, B> x, Var<T, B> w, Var<T, B> b) {
  auto& t = x.tape();
  const Shape sw = w.shape();
  if (sw.rank() != 2 || b.shape().size() != sw[1] || b.shape().rows() != 1)
    throw shape_error("linear_relu: weight " + sw.str() + " and bias " + b.shape().str() +
                      " do not form a layer");
  const Shape sh = matmul(x.value(), w.value()).shape();  // checks x against W
  Var<T, B> h = t.make(sh, detail::any_grad({x, w, b}));
  View<T, B> hv = h.value();
  detail::linear_forward(x.value(), w.value(), b.value(), true, hv);
  t.record(
      +[](Tape<T, B>& tp, const typename Tape<T, B>::Node& n) {
        View<T, B> dz = tp.out_grad(n);
        const View<T, B> h_out = tp.value(n.out);
        const auto k = relu_grad(dz, h_out).kernel();
        if (tp.requires_grad(n.in[2])) {
          bool acc;
          View<T, B> db = tp.grad_for_write(n.in[2], acc);
          B::assign_sum_rows(dz.data(), db.data(), dz.rows(), dz.cols(), k, acc);
        } else {
          dz = relu_grad(dz, h_out);
        }
        tp.accumulate(n.in[1], matmul(tp.value(n.in[0]), dz, true, false));
        tp.accumulate(n.in[0], matmul(dz, tp.value(n.in[1]), false, true));
      },
      h, {x.id(), w.id(), b.id()});
  return h;
}

}  // namespace siam

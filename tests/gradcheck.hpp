// One generic central-difference gradient checker, in double precision, used for every
// op, layer and loss. `f` builds a scalar from tape variables; the checker compares
// the tape's gradient of every input element with (f(x + h) - f(x - h)) / 2h.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <siam/siamese.hpp>
#include <vector>

namespace gradcheck {

using T = double;
using B = siam::Cpu;
using Tensor = siam::Tensor<T, B>;
using Var = siam::Var<T, B>;
using Tape = siam::Tape<T, B>;
using Fn = std::function<Var(Tape&, std::vector<Var>&)>;

/// An input of a check (implicitly copied from a Tensor, whose own copies are explicit).
struct In {
  Tensor t;
  In(const Tensor& x) : t(x) {}  // NOLINT: implicit on purpose
  In(Tensor&& x) : t(std::move(x)) {}
};

struct Result {
  double max_abs_error = 0, max_rel_error = 0;
  std::size_t checked = 0;
};

/// Relative error |a - n| / max(1, |a|, |n|) of every input element, which must stay
/// below `tol`. With h = 1e-6 the central difference is accurate to ~1e-9 for smooth f,
/// so the default bound 1e-6 leaves room for round-off but catches any wrong formula.
inline Result check(const Fn& f, std::vector<In> inputs, double tol = 1e-6, double h = 1e-6) {
  std::vector<siam::Parameter<T, B>> params;
  for (auto& x : inputs)
    params.emplace_back("x", std::move(x.t));
  Tape tape;
  auto eval = [&]() {
    tape.reset();
    std::vector<Var> vs;
    for (auto& p : params)
      vs.push_back(tape.param(p));
    return f(tape, vs);
  };
  for (auto& p : params)
    p.zero_grad();
  Var loss = eval();
  REQUIRE(loss.shape().size() == 1);
  tape.backward(loss);
  Result r;
  for (auto& p : params) {
    const std::vector<double> analytic = p.gradient().to_vector();
    for (siam::index_t i = 0; i < p.value.size(); ++i) {
      const double x0 = p.value[i];
      double fp, fm;
      {
        siam::NoGrad ng(tape);
        p.value[i] = x0 + h;
        fp = eval().value().item();
        p.value[i] = x0 - h;
        fm = eval().value().item();
      }
      p.value[i] = x0;
      const double numeric = (fp - fm) / (2 * h);
      const double a = analytic[static_cast<std::size_t>(i)];
      const double err = std::abs(a - numeric);
      const double rel = err / std::max({1.0, std::abs(a), std::abs(numeric)});
      r.max_abs_error = std::max(r.max_abs_error, err);
      r.max_rel_error = std::max(r.max_rel_error, rel);
      ++r.checked;
      if (rel > tol) {
        FAIL_CHECK("gradient mismatch at element " << i << " of " << p.value.shape().str()
                                                   << ": analytic " << a << ", numeric "
                                                   << numeric);
      }
    }
  }
  return r;
}

/// Whether building f throws the same exception type with and without gradients.
template <class E>
void check_throws_identically(const Fn& f, std::vector<In> inputs) {
  std::vector<siam::Parameter<T, B>> params;
  for (auto& x : inputs)
    params.emplace_back("x", std::move(x.t));
  Tape tape;
  auto run = [&]() {
    tape.reset();
    std::vector<Var> vs;
    for (auto& p : params)
      vs.push_back(tape.param(p));
    f(tape, vs);
  };
  {
    siam::NoGrad ng(tape);
    CHECK_THROWS_AS(run(), E);
  }
  CHECK_THROWS_AS(run(), E);
}

inline Tensor random(siam::Shape s, siam::Rng& rng, double lo = -1, double hi = 1) {
  Tensor t(s);
  for (siam::index_t i = 0; i < t.size(); ++i)
    t[i] = rng.uniform(lo, hi);
  return t;
}

/// A fixed random projection to a scalar, so non-scalar ops get a generic upstream
/// gradient: L = sum(y * R).
inline Var project(Tape& tape, Var y, const Tensor& r) {
  return siam::sum(y * tape.constant(r));
}

}  // namespace gradcheck

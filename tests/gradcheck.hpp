// The library's central-difference gradient checker (siam/testing/gradcheck.hpp), in double
// precision, wired into doctest, used for every op, layer and loss.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <siam/siamese.hpp>
#include <siam/testing/gradcheck.hpp>
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

/// The library's checker (siam/testing/gradcheck.hpp), each mismatch a failed check.
inline Result check(const Fn& f, std::vector<In> inputs, double tol = 1e-6, double h = 1e-6) {
  std::vector<Tensor> ts;
  for (auto& x : inputs)
    ts.push_back(std::move(x.t));
  const auto r = siam::testing::gradcheck(f, std::move(ts), tol, h);
  for (const auto& m : r.mismatches)
    FAIL_CHECK("gradient mismatch: " << m);
  return {r.max_abs_error, r.max_rel_error, r.checked};
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

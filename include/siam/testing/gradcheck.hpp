// A gradient checker for users' own ops, layers and losses, independent of any test
// framework: it compares the tape's gradient of every input element with the central
// difference (f(x + h) - f(x - h)) / 2h, in double precision on the CPU backend.
//
//   auto r = siam::testing::gradcheck(
//       [](Tape<double, Cpu>&, std::vector<Var<double, Cpu>>& v) { return sum(my_op(v[0])); },
//       {x});
//   if (!r.ok()) std::puts(r.report().c_str());
//
// f must build a one-element value from the inputs it is given (project a non-scalar op to
// a scalar, e.g. sum(y * R) with a fixed random R, so every output element counts).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "siam/autodiff/tape.hpp"
#include "siam/backend/cpu.hpp"

namespace siam::testing {

using CheckFn = std::function<Var<double, Cpu>(Tape<double, Cpu>&, std::vector<Var<double, Cpu>>&)>;

struct GradcheckResult {
  double max_abs_error = 0, max_rel_error = 0;
  std::size_t checked = 0;
  std::vector<std::string> mismatches;  ///< one line per element beyond the tolerance
  bool ok() const { return mismatches.empty(); }
  std::string report() const {
    std::string s = std::to_string(checked) + " gradient elements checked, max relative error " +
                    std::to_string(max_rel_error);
    for (const auto& m : mismatches)
      s += "\n  " + m;
    return s;
  }
};

/// Checks d f / d input for every element of every input. An element fails when
/// |analytic - numeric| / max(1, |analytic|, |numeric|) > tol. With h = 1e-6 the central
/// difference is accurate to about 1e-9 for smooth f, so tol = 1e-6 leaves room for
/// round-off but catches any wrong formula. Throws value_error if f's result is not a
/// single element.
inline GradcheckResult gradcheck(const CheckFn& f, std::vector<Tensor<double, Cpu>> inputs,
                                 double tol = 1e-6, double h = 1e-6) {
  std::vector<Parameter<double, Cpu>> params;
  params.reserve(inputs.size());
  for (auto& x : inputs)
    params.emplace_back("x" + std::to_string(params.size()), std::move(x));
  Tape<double, Cpu> tape;
  auto eval = [&]() {
    tape.reset();
    std::vector<Var<double, Cpu>> vs;
    for (auto& p : params)
      vs.push_back(tape.param(p));
    return f(tape, vs);
  };
  for (auto& p : params)
    p.zero_grad();
  Var<double, Cpu> loss = eval();
  if (loss.shape().size() != 1)
    throw value_error("gradcheck: f must return one element, got " + loss.shape().str());
  tape.backward(loss);
  GradcheckResult r;
  for (std::size_t k = 0; k < params.size(); ++k) {
    auto& p = params[k];
    const std::vector<double> analytic = p.gradient().to_vector();
    for (index_t i = 0; i < p.value.size(); ++i) {
      const double x0 = p.value[i];
      double fp, fm;
      {
        NoGrad<double, Cpu> ng(tape);
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
      r.max_rel_error = std::max(r.max_rel_error, std::isnan(rel) ? INFINITY : rel);
      ++r.checked;
      if (!(rel <= tol))
        r.mismatches.push_back("input " + std::to_string(k) + " " + p.value.shape().str() +
                               ", element " + std::to_string(i) + ": analytic " +
                               std::to_string(a) + ", numeric " + std::to_string(numeric));
    }
  }
  return r;
}

}  // namespace siam::testing

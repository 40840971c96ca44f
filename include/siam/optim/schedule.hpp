// Learning-rate schedules: small value types whose lr_at(step) is a pure function of the
// step, so the only state a checkpoint needs is the optimizer's step count and a resumed
// run gets bit-identical rates. `step` is the 0-based index of the update about to run,
// i.e. the optimizer's steps() before its step():
//   opt.set_lr(schedule.lr_at(opt.steps()));
//   opt.step();
//
// Every schedule takes an optional linear warm-up of W steps: for step < W,
//   lr_at(step) = lr (step + 1) / W         (the first update already moves; step W-1 is lr)
// and the decay below then runs on s = step - W:
//   ConstantLR     lr
//   StepLR         lr gamma^floor(s / every)                      (torch StepLR)
//   ExponentialLR  lr gamma^s                                     (torch ExponentialLR)
//   CosineLR       min_lr + (lr - min_lr) (1 + cos(pi s / (total - W))) / 2 for step < total,
//                  min_lr after                   (torch CosineAnnealingLR, T_max = total - W)
// `total` counts the warm-up steps too. Constructors validate and throw value_error
// naming the value. describe() writes the short spec that Schedule::parse reads back:
//   constant:lr=0.001,warmup=100
//   step:lr=0.1,every=1000,gamma=0.5
//   exp:lr=0.01,gamma=0.999
//   cosine:lr=0.001,total=3000,min_lr=0,warmup=100
#pragma once

#include <cmath>
#include <numbers>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "siam/detail/format.hpp"
#include "siam/error.hpp"

namespace siam::optim {

namespace detail {

inline void check_schedule_lr(const char* who, const char* what, double v) {
  if (!(v > 0) || !std::isfinite(v))
    throw value_error(std::string(who) + ": " + what + " must be > 0 and finite, got " +
                      siam::detail::fmt(v));
}
inline void check_warmup(const char* who, long long warmup) {
  if (warmup < 0)
    throw value_error(std::string(who) + ": warmup must be >= 0 steps, got " +
                      std::to_string(warmup));
}
inline void check_step(const char* who, long long step) {
  if (step < 0)
    throw value_error(std::string(who) + "::lr_at: step must be >= 0, got " + std::to_string(step));
}
/// The warm-up rate at step < warmup.
inline double warm(double lr, long long step, long long warmup) {
  return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
}

}  // namespace detail

/// lr at every step (after an optional warm-up).
class ConstantLR {
 public:
  explicit ConstantLR(double lr, long long warmup = 0) : lr_(lr), warmup_(warmup) {
    detail::check_schedule_lr("ConstantLR", "lr", lr);
    detail::check_warmup("ConstantLR", warmup);
  }
  double lr_at(long long step) const {
    detail::check_step("ConstantLR", step);
    return step < warmup_ ? detail::warm(lr_, step, warmup_) : lr_;
  }
  std::string describe() const {
    return "constant:lr=" + siam::detail::fmt(lr_) + ",warmup=" + std::to_string(warmup_);
  }
  double base_lr() const { return lr_; }
  long long warmup() const { return warmup_; }

 private:
  double lr_;
  long long warmup_;
};

/// lr gamma^floor(s / every): multiplied by gamma every `every` steps.
class StepLR {
 public:
  StepLR(double lr, long long every, double gamma = 0.1, long long warmup = 0)
      : lr_(lr), every_(every), gamma_(gamma), warmup_(warmup) {
    detail::check_schedule_lr("StepLR", "lr", lr);
    detail::check_schedule_lr("StepLR", "gamma", gamma);
    if (every < 1)
      throw value_error("StepLR: every must be >= 1 step, got " + std::to_string(every));
    detail::check_warmup("StepLR", warmup);
  }
  double lr_at(long long step) const {
    detail::check_step("StepLR", step);
    if (step < warmup_) return detail::warm(lr_, step, warmup_);
    return lr_ * std::pow(gamma_, static_cast<double>((step - warmup_) / every_));
  }
  std::string describe() const {
    using siam::detail::fmt;
    return "step:lr=" + fmt(lr_) + ",every=" + std::to_string(every_) + ",gamma=" + fmt(gamma_) +
           ",warmup=" + std::to_string(warmup_);
  }
  double base_lr() const { return lr_; }
  long long every() const { return every_; }
  double gamma() const { return gamma_; }
  long long warmup() const { return warmup_; }

 private:
  double lr_;
  long long every_;
  double gamma_;
  long long warmup_;
};

/// lr gamma^s: multiplied by gamma every step.
class ExponentialLR {
 public:
  ExponentialLR(double lr, double gamma, long long warmup = 0)
      : lr_(lr), gamma_(gamma), warmup_(warmup) {
    detail::check_schedule_lr("ExponentialLR", "lr", lr);
    detail::check_schedule_lr("ExponentialLR", "gamma", gamma);
    detail::check_warmup("ExponentialLR", warmup);
  }
  double lr_at(long long step) const {
    detail::check_step("ExponentialLR", step);
    if (step < warmup_) return detail::warm(lr_, step, warmup_);
    return lr_ * std::pow(gamma_, static_cast<double>(step - warmup_));
  }
  std::string describe() const {
    using siam::detail::fmt;
    return "exp:lr=" + fmt(lr_) + ",gamma=" + fmt(gamma_) + ",warmup=" + std::to_string(warmup_);
  }
  double base_lr() const { return lr_; }
  double gamma() const { return gamma_; }
  long long warmup() const { return warmup_; }

 private:
  double lr_;
  double gamma_;
  long long warmup_;
};

/// Half a cosine from lr down to min_lr over the steps [warmup, total), then min_lr.
class CosineLR {
 public:
  CosineLR(double lr, long long total, double min_lr = 0, long long warmup = 0)
      : lr_(lr), total_(total), min_lr_(min_lr), warmup_(warmup) {
    using siam::detail::fmt;
    detail::check_schedule_lr("CosineLR", "lr", lr);
    detail::check_warmup("CosineLR", warmup);
    if (total <= warmup)
      throw value_error("CosineLR: total must be > warmup, got total " + std::to_string(total) +
                        ", warmup " + std::to_string(warmup));
    if (!(min_lr >= 0 && min_lr <= lr))
      throw value_error("CosineLR: min_lr must be in [0, lr], got " + fmt(min_lr) + " with lr " +
                        fmt(lr));
  }
  double lr_at(long long step) const {
    detail::check_step("CosineLR", step);
    if (step < warmup_) return detail::warm(lr_, step, warmup_);
    if (step >= total_) return min_lr_;
    const double progress =
        static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
    return min_lr_ + (lr_ - min_lr_) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
  }
  std::string describe() const {
    using siam::detail::fmt;
    return "cosine:lr=" + fmt(lr_) + ",total=" + std::to_string(total_) +
           ",min_lr=" + fmt(min_lr_) + ",warmup=" + std::to_string(warmup_);
  }
  double base_lr() const { return lr_; }
  long long total() const { return total_; }
  double min_lr() const { return min_lr_; }
  long long warmup() const { return warmup_; }

 private:
  double lr_;
  long long total_;
  double min_lr_;
  long long warmup_;
};

/// Any of the schedules above, chosen at run time (a command-line option, a config).
class Schedule {
 public:
  using Any = std::variant<ConstantLR, StepLR, ExponentialLR, CosineLR>;

  /// Constant 1e-3 (Adam's default rate), no warm-up.
  Schedule() : s_(ConstantLR(1e-3)) {}
  template <class S>
  requires std::is_constructible_v<Any, S> Schedule(S s)  // NOLINT: implicit by design
      : s_(std::move(s)) {}

  double lr_at(long long step) const {
    return std::visit([step](const auto& s) { return s.lr_at(step); }, s_);
  }
  std::string describe() const {
    return std::visit([](const auto& s) { return s.describe(); }, s_);
  }
  const Any& get() const { return s_; }

  /// Reads a spec "kind[:key=value,...]" (kinds constant, step, exp, cosine; keys as in
  /// describe()). `lr` is the base rate unless the spec has lr=. Missing keys take the
  /// defaults warmup=0, gamma=0.1 (step), min_lr=0; step needs every=, exp gamma=,
  /// cosine total=. Throws value_error naming the spec and the offending part.
  static Schedule parse(std::string_view spec, double lr) {
    const std::string where = "schedule '" + std::string(spec) + "'";
    const std::size_t colon = spec.find(':');
    const std::string_view kind = spec.substr(0, colon);
    if (kind != "constant" && kind != "step" && kind != "exp" && kind != "cosine")
      throw value_error(where + ": unknown kind '" + std::string(kind) +
                        "' (expected constant, step, exp or cosine)");
    double gamma = -1, min_lr = 0;
    long long every = -1, total = -1, warmup = 0;
    bool has_gamma = false, has_every = false, has_total = false;
    std::string_view rest = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
      const std::size_t eq = item.find('=');
      if (eq == std::string_view::npos)
        throw value_error(where + ": expected key=value, got '" + std::string(item) + "'");
      const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
      auto bad = [&] {
        return value_error(where + ": bad value '" + std::string(value) + "' for " +
                           std::string(key));
      };
      auto real = [&](double& out) {
        if (!siam::detail::parse_double(value, out)) throw bad();
      };
      auto integer = [&](long long& out) {
        if (!siam::detail::parse_integer(value, out)) throw bad();
      };
      if (key == "lr") {
        real(lr);
      } else if (key == "warmup") {
        integer(warmup);
      } else if (key == "gamma" && (kind == "step" || kind == "exp")) {
        real(gamma);
        has_gamma = true;
      } else if (key == "every" && kind == "step") {
        integer(every);
        has_every = true;
      } else if (key == "total" && kind == "cosine") {
        integer(total);
        has_total = true;
      } else if (key == "min_lr" && kind == "cosine") {
        real(min_lr);
      } else {
        throw value_error(where + ": unknown key '" + std::string(key) + "' for kind '" +
                          std::string(kind) + "'");
      }
    }
    auto need = [&](bool has, const char* key) {
      if (!has) throw value_error(where + ": needs " + key + "=");
    };
    if (kind == "constant") return ConstantLR(lr, warmup);
    if (kind == "step") {
      need(has_every, "every");
      return StepLR(lr, every, has_gamma ? gamma : 0.1, warmup);
    }
    if (kind == "exp") {
      need(has_gamma, "gamma");
      return ExponentialLR(lr, gamma, warmup);
    }
    need(has_total, "total");
    return CosineLR(lr, total, min_lr, warmup);
  }

 private:
  Any s_;
};

}  // namespace siam::optim

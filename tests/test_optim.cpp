// Optimizers, learning-rate schedules and gradient clipping: each update against a few
// lines of plain reference code (and a closed form where one exists) on a tiny problem,
// in double; resume from saved state; allocation counts of the steady state; errors.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
#include <siam/optim/adam.hpp>
#include <siam/optim/adamw.hpp>
#include <siam/optim/clip.hpp>
#include <siam/optim/schedule.hpp>
#include <siam/optim/sgd.hpp>
#include <siam/siamese.hpp>
#include <vector>

#include "support/alloc_counter.hpp"

using namespace siam;
using Td = Tensor<double, Cpu>;
using Tf = Tensor<float, Cpu>;
using Pd = Parameter<double, Cpu>;
using Vec = std::vector<double>;

namespace {

// ---- the tiny problem: f(p) = 1/2 |p - c|^2 summed over two parameters, g = p - c.
struct Problem {
  Pd a{"a", Td::from(Shape{2, 2}, {1.0, -2.0, 0.5, 3.0})};
  Pd b{"b", Td::from(Shape{3}, {-1.0, 0.25, 2.0})};
  Vec ca{0.3, 0.1, -0.7, 1.0}, cb{0.0, -0.5, 0.5};
  std::vector<Pd*> params() { return {&a, &b}; }
  // Sets each gradient to p - c (as a backward pass would).
  void gradients() {
    for (auto [p, c] : {std::pair{&a, &ca}, std::pair{&b, &cb}}) {
      p->grad = Td(p->value);
      for (index_t i = 0; i < p->value.size(); ++i)
        p->grad[i] = p->value[i] - (*c)[static_cast<std::size_t>(i)];
      p->grad_fresh = false;
    }
  }
  Vec flat() const {
    Vec v = a.value.to_vector(), w = b.value.to_vector();
    v.insert(v.end(), w.begin(), w.end());
    return v;
  }
};
const Vec c_all{0.3, 0.1, -0.7, 1.0, 0.0, -0.5, 0.5};

// ---- reference updates, written as plainly as possible from PyTorch's documentation.
struct RefSGD {
  double lr, mu = 0, damp = 0, wd = 0;
  bool nesterov = false;
  Vec buf;
  long long t = 0;
  void step(Vec& p, const Vec& g) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + wd * p[i];
      if (mu != 0) {
        if (t == 0) {
          buf.resize(p.size());
          buf[i] = d;
        } else {
          buf[i] = mu * buf[i] + (1 - damp) * d;
        }
        d = nesterov ? d + mu * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
    ++t;
  }
};
struct RefAdamW {  // wd = 0 is Adam
  double lr, b1, b2, eps, wd;
  Vec m, v;
  long long t = 0;
  void step(Vec& p, const Vec& g) {
    ++t;
    m.resize(p.size());
    v.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, double(t)));
      const double vhat = v[i] / (1 - std::pow(b2, double(t)));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

Vec gradient_of(const Vec& p) {
  Vec g(p.size());
  for (std::size_t i = 0; i < p.size(); ++i)
    g[i] = p[i] - c_all[i];
  return g;
}

void check_close(const Vec& got, const Vec& want, double rel = 1e-13) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(rel).scale(1.0));
  }
}

// Runs `opt` and `ref` side by side for `steps` steps on the problem, with an optional
// learning-rate change before each step (lr_of(step) < 0: keep).
template <class Ref>
void run_against(optim::Optimizer<double, Cpu>& opt, Problem& pb, Ref& ref, int steps,
                 double (*lr_of)(int) = nullptr) {
  Vec p = pb.flat();
  for (int s = 0; s < steps; ++s) {
    CAPTURE(s);
    if (lr_of && lr_of(s) >= 0) {
      opt.set_lr(lr_of(s));
      ref.lr = lr_of(s);
    }
    pb.gradients();
    opt.step();
    ref.step(p, gradient_of(p));
    check_close(pb.flat(), p);
  }
  CHECK(opt.steps() == steps);
}

}  // namespace

// ---- SGD

TEST_CASE("SGD plain: the closed form (1 - lr)^t on the quadratic") {
  Problem pb;
  const Vec p0 = pb.flat();
  optim::SGD<double, Cpu> sgd(pb.params(), {0.1});
  for (int t = 1; t <= 5; ++t) {
    pb.gradients();
    sgd.step();
    const Vec p = pb.flat();
    for (std::size_t i = 0; i < p.size(); ++i)
      CHECK(p[i] - c_all[i] == doctest::Approx(std::pow(0.9, t) * (p0[i] - c_all[i])));
  }
  CHECK(sgd.state_tensors().empty());
}

TEST_CASE("SGD against reference code: plain, weight decay, momentum, dampening, Nesterov") {
  struct Case {
    const char* name;
    optim::SGDOptions o;
  };
  for (const Case& c :
       {Case{"plain", {0.1}}, Case{"weight decay", {0.1, 0, 0, 0.05}}, Case{"momentum", {0.1, 0.9}},
        Case{"momentum, dampening, decay", {0.05, 0.8, 0.3, 0.01}},
        Case{"Nesterov", {0.1, 0.9, 0, 0, true}},
        Case{"Nesterov, decay", {0.02, 0.5, 0, 0.1, true}}}) {
    CAPTURE(std::string(c.name));
    Problem pb;
    optim::SGD<double, Cpu> sgd(pb.params(), c.o);
    RefSGD ref{c.o.lr, c.o.momentum, c.o.dampening, c.o.weight_decay, c.o.nesterov, {}};
    run_against(sgd, pb, ref, 6);
    if (c.o.momentum != 0) {
      // The buffers are the state, in parameter order.
      const auto st = sgd.state_tensors();
      REQUIRE(st.size() == 2);
      CHECK((*st[0])[3] == doctest::Approx(ref.buf[3]).epsilon(1e-13));
      CHECK((*st[1])[2] == doctest::Approx(ref.buf[6]).epsilon(1e-13));
    }
  }
}

TEST_CASE("SGD momentum: two steps by hand (the first step takes the gradient undamped)") {
  Pd p("p", Td::from(Shape{1}, {1.0}));
  optim::SGD<double, Cpu> sgd({&p}, {0.1, 0.9, 0.5});
  p.grad = Td::from(Shape{1}, {2.0});
  p.grad_fresh = false;
  sgd.step();  // buf = 2 (no dampening at the first step); p = 1 - 0.1 * 2 = 0.8
  CHECK(sgd.momentum_buffers()[0][0] == 2.0);
  CHECK(p.value[0] == doctest::Approx(0.8).epsilon(1e-15));
  sgd.step();  // buf = 0.9 * 2 + 0.5 * 2 = 2.8; p = 0.8 - 0.28 = 0.52
  CHECK(sgd.momentum_buffers()[0][0] == doctest::Approx(2.8).epsilon(1e-15));
  CHECK(p.value[0] == doctest::Approx(0.52).epsilon(1e-15));
}

// ---- many parameters: the fused pass runs them 8 to a batch (detail::fused_over)

namespace {

// 19 tensors of 19 different sizes (1 to 19 elements, ranks 1 to 3): batches of 8, 8 and 3,
// so every position in a batch and a partial last batch are covered. f = 1/2 |p - c|^2.
struct ManyProblem {
  static constexpr int count = 19;
  std::vector<std::unique_ptr<Pd>> ps;
  std::vector<Vec> cs;
  ManyProblem() {
    Rng rng(77);
    for (int k = 0; k < count; ++k) {
      const index_t n = k + 1;
      const Shape s = n % 3 == 0 ? Shape{n / 3, 3} : n % 4 == 0 ? Shape{2, 2, n / 4} : Shape{n};
      Td v(s);
      Vec c(static_cast<std::size_t>(n));
      for (index_t i = 0; i < n; ++i) {
        v[i] = rng.uniform(-2, 2);
        c[static_cast<std::size_t>(i)] = rng.uniform(-1, 1);
      }
      ps.push_back(std::make_unique<Pd>(std::to_string(k), std::move(v)));
      cs.push_back(std::move(c));
    }
  }
  std::vector<Pd*> params() {
    std::vector<Pd*> v;
    for (auto& p : ps)
      v.push_back(p.get());
    return v;
  }
  void gradients() {
    for (std::size_t k = 0; k < ps.size(); ++k) {
      Pd& p = *ps[k];
      p.grad = Td(p.value);
      for (index_t i = 0; i < p.value.size(); ++i)
        p.grad[i] = p.value[i] - cs[k][static_cast<std::size_t>(i)];
      p.grad_fresh = false;
    }
  }
};

// Runs `opt` against one reference per tensor, checking every element of every tensor
// after each step (`replay`: through next_scalars + step_from instead of step()).
template <class Ref>
void run_many(optim::Optimizer<double, Cpu>& opt, ManyProblem& pb, const Ref& proto,
              bool replay = false) {
  std::vector<Ref> refs(ManyProblem::count, proto);
  std::vector<Vec> p;
  for (auto& q : pb.ps)
    p.push_back(q->value.to_vector());
  Td rows(Shape{2 * static_cast<index_t>(std::max<std::size_t>(opt.replay_scalars(), 1))});
  for (int s = 0; s < 4; ++s) {
    CAPTURE(s);
    pb.gradients();
    if (replay) {
      const auto m = static_cast<index_t>(opt.replay_scalars());
      opt.next_scalars(rows.data(), rows.data() + m);
      opt.step_from(View<double, Cpu>(rows.data(), Shape{m}));
    } else {
      opt.step();
    }
    for (std::size_t k = 0; k < p.size(); ++k) {
      CAPTURE(k);
      Vec g(p[k].size());
      for (std::size_t i = 0; i < g.size(); ++i)
        g[i] = p[k][i] - pb.cs[k][i];
      refs[k].step(p[k], g);
      check_close(pb.ps[k]->value.to_vector(), p[k]);
    }
  }
}

}  // namespace

TEST_CASE("every optimizer updates every one of 19 tensors of different sizes as the reference") {
  for (const optim::SGDOptions& o :
       {optim::SGDOptions{0.1}, optim::SGDOptions{0.1, 0, 0, 0.05}, optim::SGDOptions{0.1, 0.9},
        optim::SGDOptions{0.05, 0.8, 0.3, 0.01}, optim::SGDOptions{0.1, 0.9, 0, 0.02, true}}) {
    CAPTURE(o.momentum);
    CAPTURE(o.nesterov);
    ManyProblem pb;
    optim::SGD<double, Cpu> sgd(pb.params(), o);
    run_many(sgd, pb, RefSGD{o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, {}});
  }
  for (bool replay : {false, true}) {
    CAPTURE(replay);
    ManyProblem p1, p2;
    optim::Adam<double, Cpu> adam(p1.params(), {0.05, 0.8, 0.99, 1e-8});
    run_many(adam, p1, RefAdamW{0.05, 0.8, 0.99, 1e-8, 0, {}, {}}, replay);
    optim::AdamW<double, Cpu> adamw(p2.params(), {0.05, 0.8, 0.99, 1e-8, 0.1});
    run_many(adamw, p2, RefAdamW{0.05, 0.8, 0.99, 1e-8, 0.1, {}, {}}, replay);
  }
}

// ---- Adam and AdamW

TEST_CASE("Adam against reference code for six steps") {
  Problem pb;
  optim::Adam<double, Cpu> adam(pb.params(), {0.05, 0.8, 0.99, 1e-8});
  RefAdamW ref{0.05, 0.8, 0.99, 1e-8, 0, {}, {}};
  run_against(adam, pb, ref, 6);
}

TEST_CASE("AdamW against reference code (PyTorch's formula) for six steps") {
  Problem pb;
  optim::AdamW<double, Cpu> adamw(pb.params(), {0.05, 0.8, 0.99, 1e-8, 0.1});
  RefAdamW ref{0.05, 0.8, 0.99, 1e-8, 0.1, {}, {}};
  run_against(adamw, pb, ref, 6);
  const auto st = adamw.state_tensors();
  REQUIRE(st.size() == 4);  // m_a, m_b, v_a, v_b
  CHECK((*st[1])[0] == doctest::Approx(ref.m[4]).epsilon(1e-13));
  CHECK((*st[2])[3] == doctest::Approx(ref.v[3]).epsilon(1e-13));
}

TEST_CASE("AdamW step 1 by hand: the decay is decoupled from the moments") {
  // p = 2, g = 0.5, lr = 0.1, wd = 0.5: p = 2 (1 - 0.05) = 1.9, then the Adam step of
  // the first update, lr g / (|g| + eps) = 0.1 (1 - 2e-8 + ...): p = 1.8 + 2e-9.
  Pd p("p", Td::from(Shape{1}, {2.0}));
  optim::AdamW<double, Cpu> adamw({&p}, {0.1, 0.9, 0.999, 1e-8, 0.5});
  p.grad = Td::from(Shape{1}, {0.5});
  p.grad_fresh = false;
  adamw.step();
  CHECK(p.value[0] == doctest::Approx(1.9 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-15));
  CHECK(adamw.first_moments()[0][0] == doctest::Approx(0.05).epsilon(1e-15));  // no decay in m
}

TEST_CASE("AdamW with weight_decay 0 is Adam bit for bit") {
  Problem p1, p2;
  optim::Adam<double, Cpu> adam(p1.params(), {0.01, 0.9, 0.99, 1e-8});
  optim::AdamW<double, Cpu> adamw(p2.params(), {0.01, 0.9, 0.99, 1e-8, 0.0});
  for (int s = 0; s < 5; ++s) {
    p1.gradients();
    p2.gradients();
    adam.step();
    adamw.step();
  }
  CHECK(p1.flat() == p2.flat());
}

TEST_CASE("Adam's replayable update: the reference trajectory, scalars read from memory") {
  // step_from() with next_scalars()'s apply row is step() with its constants read from a
  // tensor (what a captured CUDA graph replays): the same reference values, lr changes too.
  Problem pb;
  optim::Adam<double, Cpu> adam(pb.params(), {0.05, 0.8, 0.99, 1e-8});
  REQUIRE(adam.replay_scalars() == 8);
  RefAdamW ref{0.05, 0.8, 0.99, 1e-8, 0, {}, {}};
  Vec p = pb.flat();
  Td rows(Shape{16});
  for (int s = 0; s < 6; ++s) {
    CAPTURE(s);
    if (s == 3) {
      adam.set_lr(0.02);
      ref.lr = 0.02;
    }
    pb.gradients();
    adam.next_scalars(rows.data(), rows.data() + 8);
    adam.step_from(View<double, Cpu>(rows.data(), Shape{8}));
    ref.step(p, gradient_of(p));
    check_close(pb.flat(), p);
  }
  CHECK(adam.steps() == 6);
  CHECK_THROWS_AS(adam.step_from(rows.view()), shape_error);  // 16 scalars, not 8
}

TEST_CASE("AdamW's replayable update: the reference trajectory; the skip row changes nothing") {
  Problem pb;
  optim::AdamW<double, Cpu> adamw(pb.params(), {0.05, 0.8, 0.99, 1e-8, 0.1});
  REQUIRE(adamw.replay_scalars() == 9);
  RefAdamW ref{0.05, 0.8, 0.99, 1e-8, 0.1, {}, {}};
  Vec p = pb.flat();
  Td rows(Shape{18});
  for (int s = 0; s < 6; ++s) {
    CAPTURE(s);
    pb.gradients();
    adamw.next_scalars(rows.data(), rows.data() + 9);
    adamw.step_from(View<double, Cpu>(rows.data(), Shape{9}));
    ref.step(p, gradient_of(p));
    check_close(pb.flat(), p);
  }
  const Vec w = pb.flat();
  pb.gradients();
  pb.b.grad[2] = std::numeric_limits<double>::quiet_NaN();
  adamw.next_scalars(rows.data(), rows.data() + 9);
  adamw.step_from(View<double, Cpu>(rows.data() + 9, Shape{9}));
  CHECK(pb.flat() == w);
  CHECK_THROWS_AS(adamw.step_from(View<double, Cpu>(rows.data(), Shape{8})), shape_error);
}

TEST_CASE("Adam's replayable update: the skip row leaves weights and moments as they are, NaN") {
  Problem pb;
  optim::Adam<double, Cpu> adam(pb.params(), {0.05, 0.9, 0.99, 1e-8});
  Td rows(Shape{16});
  pb.gradients();
  adam.step();  // non-zero moments
  const Vec w = pb.flat();
  const Vec m = adam.first_moments()[0].to_vector(), v = adam.second_moments()[1].to_vector();
  pb.gradients();
  pb.a.grad[1] = std::numeric_limits<double>::quiet_NaN();
  pb.b.grad[0] = std::numeric_limits<double>::infinity();
  adam.next_scalars(rows.data(), rows.data() + 8);
  adam.step_from(View<double, Cpu>(rows.data() + 8, Shape{8}));
  CHECK(pb.flat() == w);
  CHECK(adam.first_moments()[0].to_vector() == m);
  CHECK(adam.second_moments()[1].to_vector() == v);
}

TEST_CASE("optimizers without a replayable update say so") {
  Problem pb;
  optim::SGD<double, Cpu> sgd(pb.params(), {0.1});
  CHECK(sgd.replay_scalars() == 0);
  double row[2];
  CHECK_THROWS_WITH_AS(sgd.next_scalars(row, row), doctest::Contains("no replayable update"),
                       value_error);
}

// ---- the interface: set_lr, describe, state, resume

TEST_CASE("set_lr takes effect at the next step, for every optimizer") {
  auto lr_of = +[](int s) { return s == 2 ? 0.01 : s == 4 ? 0.3 : s == 5 ? 0.0 : -1.0; };
  {
    Problem pb;
    optim::SGD<double, Cpu> o(pb.params(), {0.1, 0.9, 0, 0.01, true});
    RefSGD ref{0.1, 0.9, 0, 0.01, true, {}};
    run_against(o, pb, ref, 7, lr_of);
    CHECK(o.lr() == 0.0);
  }
  {
    Problem pb;
    optim::Adam<double, Cpu> o(pb.params(), {0.1, 0.9, 0.99, 1e-8});
    RefAdamW ref{0.1, 0.9, 0.99, 1e-8, 0, {}, {}};
    run_against(o, pb, ref, 7, lr_of);
  }
  {
    Problem pb;
    optim::AdamW<double, Cpu> o(pb.params(), {0.1, 0.9, 0.99, 1e-8, 0.2});
    RefAdamW ref{0.1, 0.9, 0.99, 1e-8, 0.2, {}, {}};
    run_against(o, pb, ref, 7, lr_of);
  }
}

TEST_CASE("the Optimizer interface: any optimizer behind one pointer") {
  Problem pb;
  std::vector<std::unique_ptr<optim::Optimizer<double, Cpu>>> opts;
  opts.push_back(std::make_unique<optim::SGD<double, Cpu>>(pb.params(), optim::SGDOptions{0.1}));
  opts.push_back(std::make_unique<optim::Adam<double, Cpu>>(pb.params()));
  opts.push_back(std::make_unique<optim::AdamW<double, Cpu>>(pb.params()));
  CHECK(opts[0]->describe() ==
        "SGD(lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=false)");
  CHECK(opts[1]->describe() == "Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08)");
  CHECK(opts[2]->describe() == "AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)");
  for (auto& o : opts) {
    CAPTURE(o->describe());
    CHECK(o->parameters().size() == 2);
    pb.gradients();
    o->step();
    CHECK(o->steps() == 1);
    o->zero_grad();
    CHECK(pb.a.grad_fresh);
    CHECK(pb.b.grad_fresh);
    o->set_steps(7);
    CHECK(o->steps() == 7);
  }
  CHECK(opts[1]->state_tensors().size() == 4);
}

namespace {
// Trains 10 steps under a cosine schedule with warm-up: straight through, or stopping
// after 5 and continuing in a new optimizer given the saved step count and (resumed) the
// saved state tensors or (state_lost) not.
enum class Run { straight, resumed, state_lost };
template <class Make>
Vec run_with_resume(Make make, Run run) {
  const optim::Schedule sched = optim::CosineLR(0.1, 10, 0.001, 3);
  Problem pb;
  std::unique_ptr<optim::Optimizer<double, Cpu>> opt = make(pb.params());
  for (int s = 0; s < 10; ++s) {
    if (run != Run::straight && s == 5) {
      // what a checkpoint stores: parameters (kept in pb), state tensors, step count
      std::vector<Vec> saved;
      for (auto* t : opt->state_tensors())
        saved.push_back(t->to_vector());
      const long long steps = opt->steps();
      opt = make(pb.params());
      auto st = opt->state_tensors();
      REQUIRE(st.size() == saved.size());
      for (std::size_t i = 0; i < st.size() && run == Run::resumed; ++i)
        Cpu::from_host(st[i]->data(), saved[i].data(), st[i]->size());
      opt->set_steps(steps);
    }
    opt->set_lr(sched.lr_at(opt->steps()));
    pb.gradients();
    opt->step();
  }
  return pb.flat();
}
}  // namespace

TEST_CASE("resume from state_tensors + steps + schedule is bit-identical") {
  using P = std::vector<Pd*>;
  using U = std::unique_ptr<optim::Optimizer<double, Cpu>>;
  auto sgd = [](P p) -> U {
    return std::make_unique<optim::SGD<double, Cpu>>(p, optim::SGDOptions{1, 0.9, 0.1, 0.01});
  };
  auto nag = [](P p) -> U {
    return std::make_unique<optim::SGD<double, Cpu>>(p, optim::SGDOptions{1, 0.9, 0, 0, true});
  };
  auto adam = [](P p) -> U { return std::make_unique<optim::Adam<double, Cpu>>(p); };
  auto adamw = [](P p) -> U {
    return std::make_unique<optim::AdamW<double, Cpu>>(p, optim::AdamWOptions{1, 0.9, 0.99});
  };
  for (const auto& make : {std::function<U(P)>(sgd), std::function<U(P)>(nag),
                           std::function<U(P)>(adam), std::function<U(P)>(adamw)}) {
    const Vec straight = run_with_resume(make, Run::straight);
    CHECK(run_with_resume(make, Run::resumed) == straight);
    // and the state matters: without it the run goes elsewhere
    CHECK(run_with_resume(make, Run::state_lost) != straight);
  }
}

// ---- schedules

TEST_CASE("schedules: values at chosen steps") {
  SUBCASE("constant, with and without warm-up") {
    const optim::ConstantLR c(0.1), w(0.1, 4);
    CHECK(c.lr_at(0) == 0.1);
    CHECK(c.lr_at(1000000) == 0.1);
    CHECK(w.lr_at(0) == doctest::Approx(0.025));
    CHECK(w.lr_at(1) == doctest::Approx(0.05));
    CHECK(w.lr_at(3) == 0.1);
    CHECK(w.lr_at(4) == 0.1);
  }
  SUBCASE("step decay") {
    const optim::StepLR s(1.0, 3, 0.5), w(1.0, 3, 0.5, 2);
    CHECK(s.lr_at(0) == 1.0);
    CHECK(s.lr_at(2) == 1.0);
    CHECK(s.lr_at(3) == 0.5);
    CHECK(s.lr_at(5) == 0.5);
    CHECK(s.lr_at(6) == 0.25);
    CHECK(s.lr_at(30) == doctest::Approx(std::pow(0.5, 10)));
    CHECK(w.lr_at(0) == 0.5);  // warm-up: 1 * 1/2
    CHECK(w.lr_at(1) == 1.0);
    CHECK(w.lr_at(4) == 1.0);  // s = 2
    CHECK(w.lr_at(5) == 0.5);  // s = 3
  }
  SUBCASE("exponential") {
    const optim::ExponentialLR e(2.0, 0.5), w(2.0, 0.9, 10);
    CHECK(e.lr_at(0) == 2.0);
    CHECK(e.lr_at(3) == 0.25);
    CHECK(w.lr_at(4) == doctest::Approx(1.0));
    CHECK(w.lr_at(12) == doctest::Approx(2.0 * 0.81));
  }
  SUBCASE("cosine with linear warm-up") {
    const optim::CosineLR c(1.0, 10), w(1.0, 12, 0.1, 2);
    CHECK(c.lr_at(0) == 1.0);
    CHECK(c.lr_at(2) == doctest::Approx((1 + std::cos(std::numbers::pi * 0.2)) / 2));
    CHECK(c.lr_at(2) == doctest::Approx(0.9045084971874737));
    CHECK(c.lr_at(5) == doctest::Approx(0.5));
    CHECK(c.lr_at(9) == doctest::Approx(0.0244717418524232));
    CHECK(c.lr_at(10) == 0.0);
    CHECK(c.lr_at(500) == 0.0);
    CHECK(w.lr_at(0) == 0.5);
    CHECK(w.lr_at(1) == 1.0);
    CHECK(w.lr_at(2) == doctest::Approx(1.0));   // decay starts at full rate
    CHECK(w.lr_at(7) == doctest::Approx(0.55));  // halfway: (1 + 0.1) / 2
    CHECK(w.lr_at(12) == 0.1);
  }
}

TEST_CASE("schedules: lr_at is a pure function of the step") {
  const optim::Schedule s = optim::CosineLR(0.3, 1000, 1e-4, 50);
  std::vector<double> forward, backward(1000);
  for (long long i = 0; i < 1000; ++i)
    forward.push_back(s.lr_at(i));
  for (long long i = 999; i >= 0; --i)
    backward[static_cast<std::size_t>(i)] = s.lr_at(i);
  CHECK(forward == backward);
}

TEST_CASE("schedules: describe() and parse() round-trip; parse defaults and errors") {
  for (const optim::Schedule s :
       {optim::Schedule(optim::ConstantLR(0.001, 100)), optim::Schedule(optim::StepLR(0.1, 7, 0.3)),
        optim::Schedule(optim::ExponentialLR(0.01, 0.999, 5)),
        optim::Schedule(optim::CosineLR(1e-3, 3000, 1e-6, 100))}) {
    CAPTURE(s.describe());
    const optim::Schedule r = optim::Schedule::parse(s.describe(), 123.0);
    CHECK(r.describe() == s.describe());
    for (long long step : {0, 1, 6, 7, 99, 100, 101, 2999, 3000, 5000})
      CHECK(r.lr_at(step) == s.lr_at(step));
  }
  CHECK(optim::Schedule::parse("constant", 0.5).describe() == "constant:lr=0.5,warmup=0");
  CHECK(optim::Schedule::parse("step:every=10", 0.5).describe() ==
        "step:lr=0.5,every=10,gamma=0.1,warmup=0");
  CHECK(optim::Schedule::parse("cosine:total=300,warmup=30", 0.01).describe() ==
        "cosine:lr=0.01,total=300,min_lr=0,warmup=30");
  CHECK(optim::Schedule().describe() == "constant:lr=0.001,warmup=0");
  for (const char* bad :
       {"linear", "", "cosine", "step", "exp", "constant:warmup", "constant:warmup=x",
        "constant:warmup=1.5", "constant:gamma=0.5", "step:every=0", "cosine:total=10,warmup=10",
        "cosine:total=10,min_lr=2", "exp:gamma=-1", "constant:lr=0", "constant:warmup=-3"}) {
    CAPTURE(std::string(bad));
    CHECK_THROWS_AS(optim::Schedule::parse(bad, 0.1), value_error);
  }
  CHECK_THROWS_WITH(optim::Schedule::parse("cosine:totl=5", 0.1),
                    "schedule 'cosine:totl=5': unknown key 'totl' for kind 'cosine'");
}

TEST_CASE("schedules: bad values throw value_error naming them") {
  CHECK_THROWS_WITH_AS(optim::ConstantLR(-0.1), "ConstantLR: lr must be > 0 and finite, got -0.1",
                       value_error);
  CHECK_THROWS_AS((optim::ConstantLR(std::numeric_limits<double>::quiet_NaN())), value_error);
  CHECK_THROWS_AS(optim::ConstantLR(0.1, -1), value_error);
  CHECK_THROWS_WITH_AS(optim::StepLR(0.1, 0), "StepLR: every must be >= 1 step, got 0",
                       value_error);
  CHECK_THROWS_AS(optim::StepLR(0.1, 5, 0.0), value_error);
  CHECK_THROWS_AS((optim::ExponentialLR(0.1, std::numeric_limits<double>::infinity())),
                  value_error);
  CHECK_THROWS_WITH_AS(optim::CosineLR(0.1, 5, 0, 5),
                       "CosineLR: total must be > warmup, got total 5, warmup 5", value_error);
  CHECK_THROWS_AS(optim::CosineLR(0.1, 5, -1e-3), value_error);
  CHECK_THROWS_WITH_AS(optim::CosineLR(0.1, 5).lr_at(-1),
                       "CosineLR::lr_at: step must be >= 0, got -1", value_error);
}

// ---- clipping

TEST_CASE("clip_grad_norm: the global norm, scaled only above max_norm") {
  Problem pb;
  pb.gradients();
  Vec g = gradient_of(pb.flat());
  double sq = 0;
  for (double x : g)
    sq += x * x;
  const double norm = std::sqrt(sq);  // about 3.36
  optim::ClipWorkspace<double, Cpu> ws;
  SUBCASE("below the bound: unchanged") {
    CHECK(optim::clip_grad_norm(pb.params(), 10.0, ws) == doctest::Approx(norm).epsilon(1e-15));
    CHECK(pb.a.grad.to_vector() == Vec{g[0], g[1], g[2], g[3]});
  }
  SUBCASE("above: every gradient by the same factor max / (norm + 1e-6)") {
    CHECK(optim::clip_grad_norm(pb.params(), 1.0, ws) == doctest::Approx(norm).epsilon(1e-15));
    const double k = 1.0 / (norm + 1e-6);
    check_close(pb.a.grad.to_vector(), {k * g[0], k * g[1], k * g[2], k * g[3]});
    check_close(pb.b.grad.to_vector(), {k * g[4], k * g[5], k * g[6]});
    // the clipped norm is max_norm (less the 1e-6 guard)
    CHECK(optim::clip_grad_norm(pb.params(), 1e9, ws) == doctest::Approx(1.0).epsilon(1e-6));
  }
  SUBCASE("max_norm = inf only measures") {
    CHECK(optim::clip_grad_norm(pb.params(), std::numeric_limits<double>::infinity(), ws) ==
          doctest::Approx(norm));
    CHECK(pb.b.grad.to_vector() == Vec{g[4], g[5], g[6]});
  }
  SUBCASE("fresh (zero) gradients, empty tensors and no parameters give 0") {
    pb.a.zero_grad();
    Pd e("e", Td(Shape{0, 3}));
    std::vector<Pd*> ps{&pb.a, &e};
    CHECK(optim::clip_grad_norm(ps, 1.0, ws) == 0.0);
    CHECK(optim::clip_grad_norm(std::vector<Pd*>{}, 1.0, ws) == 0.0);
    CHECK(optim::clip_grad_norm(std::vector<Pd*>{&e}, 1.0, ws) == 0.0);
  }
}

TEST_CASE("clip_grad_norm: errors") {
  Problem pb;
  pb.gradients();
  optim::ClipWorkspace<double, Cpu> ws;
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(pb.params(), 0.0, ws),
                       "clip_grad_norm: max_norm must be > 0, got 0", value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm(pb.params(), -1.0, ws), value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm(pb.params(), std::numeric_limits<double>::quiet_NaN(), ws),
                  value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm(std::vector<Pd*>{&pb.a, nullptr}, 1.0, ws), value_error);
  pb.b.grad[1] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm(pb.params(), 1.0, ws),
                       "clip_grad_norm: the gradients' total norm is nan (a NaN or Inf gradient)",
                       numeric_error);
  const Vec before = pb.a.grad.to_vector();
  CHECK(std::isnan(optim::clip_grad_norm(pb.params(), 1.0, ws, false)));
  CHECK(pb.a.grad.to_vector() == before);  // left as they were
}

// ---- allocation: the steady-state step allocates nothing

TEST_CASE("the steady-state step of every optimizer, and clipping, allocate nothing") {
  // Ten parameters (two batches of fused groups), some above the parallel threshold.
  Rng rng(3);
  std::vector<Parameter<float, Cpu>> store;
  for (int i = 0; i < 10; ++i) {
    const index_t rows = i % 3 == 0 ? 300 : 7, cols = i % 2 ? 129 : 1;
    std::vector<float> v(static_cast<std::size_t>(rows * cols));
    for (auto& x : v)
      x = static_cast<float>(rng.uniform(-1, 1));
    store.emplace_back("p", Tf::from(Shape{rows, cols}, std::span<const float>(v)));
  }
  std::vector<Parameter<float, Cpu>*> ps;
  for (auto& p : store)
    ps.push_back(&p);
  auto fill_grads = [&] {
    for (auto* p : ps) {
      p->zero_grad();
      p->gradient() += p->value * 0.01f;  // materialise, then a backward-like write
    }
  };
  std::vector<std::unique_ptr<optim::Optimizer<float, Cpu>>> opts;
  opts.push_back(std::make_unique<optim::SGD<float, Cpu>>(ps, optim::SGDOptions{0.1}));
  opts.push_back(
      std::make_unique<optim::SGD<float, Cpu>>(ps, optim::SGDOptions{0.1, 0.9, 0.1, 1e-4}));
  opts.push_back(
      std::make_unique<optim::SGD<float, Cpu>>(ps, optim::SGDOptions{0.1, 0.9, 0, 1e-4, true}));
  opts.push_back(std::make_unique<optim::Adam<float, Cpu>>(ps));
  opts.push_back(std::make_unique<optim::AdamW<float, Cpu>>(ps));
  optim::ClipWorkspace<float, Cpu> ws;
  const optim::Schedule sched = optim::CosineLR(0.1, 100, 0, 5);
  for (auto& o : opts) {
    CAPTURE(o->describe());
    for (int s = 0; s < 2; ++s) {  // warm-up: first-step paths, thread pool
      fill_grads();
      optim::clip_grad_norm(ps, 0.5, ws);
      o->step();
    }
    double norms[3];
    const long before = alloc_counter::count.load();
    for (double& norm : norms) {
      fill_grads();
      norm = optim::clip_grad_norm(ps, 0.5, ws);
      o->set_lr(sched.lr_at(o->steps()));
      o->step();
    }
    CHECK(alloc_counter::count.load() - before == 0);
    for (double norm : norms)
      CHECK(norm > 0.5);  // so the scale pass ran too
  }
}

// ---- errors

TEST_CASE("optimizers reject bad options, naming the value") {
  Pd p("p", Td(Shape{1}));
  using S = optim::SGD<double, Cpu>;
  using A = optim::AdamW<double, Cpu>;
  auto sgd = [&](optim::SGDOptions o) { S s({&p}, o); };
  auto adamw = [&](optim::AdamWOptions o) { A a({&p}, o); };
  CHECK_THROWS_WITH_AS(sgd({0.0}), "SGD: learning rate must be > 0 and finite, got 0", value_error);
  CHECK_THROWS_AS(sgd({-1}), value_error);
  CHECK_THROWS_AS(sgd({std::numeric_limits<double>::infinity()}), value_error);
  CHECK_THROWS_WITH_AS(sgd({0.1, 1.0}), "SGD: momentum must be in [0, 1), got 1", value_error);
  CHECK_THROWS_AS(sgd({0.1, -0.5}), value_error);
  CHECK_THROWS_AS(sgd({0.1, 0.9, 1.5}), value_error);
  CHECK_THROWS_WITH_AS(sgd({0.1, 0, 0, -1e-4}),
                       "SGD: weight_decay must be >= 0 and finite, got -1e-04", value_error);
  CHECK_THROWS_WITH_AS(sgd({0.1, 0, 0, 0, true}),
                       "SGD: Nesterov momentum needs momentum > 0 and dampening 0, got momentum "
                       "0, dampening 0",
                       value_error);
  CHECK_THROWS_AS(sgd({0.1, 0.9, 0.1, 0, true}), value_error);
  CHECK_THROWS_WITH_AS(adamw({1e-3, 1.0}), "AdamW: betas must be in [0, 1), got 1, 0.999",
                       value_error);
  CHECK_THROWS_AS(adamw({1e-3, 0.9, -0.1}), value_error);
  CHECK_THROWS_WITH_AS(adamw({1e-3, 0.9, 0.999, 0}), "AdamW: eps must be > 0 and finite, got 0",
                       value_error);
  CHECK_THROWS_WITH_AS(adamw({1e-3, 0.9, 0.999, 1e-8, -0.01}),
                       "AdamW: weight_decay must be >= 0 and finite, got -0.01", value_error);
  CHECK_THROWS_AS(adamw({0}), value_error);
  CHECK_THROWS_WITH_AS(S({&p, nullptr}), "SGD: parameter 1 is null", value_error);
  CHECK_THROWS_AS(A({nullptr}), value_error);
  CHECK_THROWS_AS((optim::Adam<double, Cpu>({nullptr})), value_error);
}

TEST_CASE("set_lr and set_steps reject bad values and keep the old ones") {
  Pd p("p", Td(Shape{1}));
  optim::SGD<double, Cpu> sgd({&p}, {0.1});
  optim::Adam<double, Cpu> adam({&p});
  optim::AdamW<double, Cpu> adamw({&p});
  for (optim::Optimizer<double, Cpu>* o :
       std::initializer_list<optim::Optimizer<double, Cpu>*>{&sgd, &adam, &adamw}) {
    CAPTURE(o->describe());
    const double lr = o->lr();
    CHECK_THROWS_AS(o->set_lr(-1e-3), value_error);
    CHECK_THROWS_AS(o->set_lr(std::numeric_limits<double>::quiet_NaN()), value_error);
    CHECK_THROWS_AS(o->set_lr(std::numeric_limits<double>::infinity()), value_error);
    CHECK(o->lr() == lr);
    o->set_lr(0);  // a schedule may reach 0
    CHECK(o->lr() == 0);
    CHECK_THROWS_AS(o->set_steps(-1), value_error);
    CHECK(o->steps() == 0);
  }
  CHECK_THROWS_WITH(adam.set_lr(-2), "Adam::set_lr: learning rate must be >= 0 and finite, got -2");
}

TEST_CASE("a zero learning rate leaves the parameters unchanged but advances the state") {
  Problem pb;
  optim::AdamW<double, Cpu> o(pb.params(), {0.1});
  const Vec p0 = pb.flat();
  o.set_lr(0);
  pb.gradients();
  o.step();
  CHECK(pb.flat() == p0);
  CHECK(o.steps() == 1);
  CHECK(o.first_moments()[0][0] != 0);
}

TEST_CASE("take_back un-counts steps: the next update is the one it would have been") {
  for (const bool adam_w : {false, true}) {
    CAPTURE(adam_w);
    Problem a, b;
    std::unique_ptr<optim::Optimizer<double, Cpu>> oa, ob;
    if (adam_w) {
      oa = std::make_unique<optim::AdamW<double, Cpu>>(a.params(), optim::AdamWOptions{0.1});
      ob = std::make_unique<optim::AdamW<double, Cpu>>(b.params(), optim::AdamWOptions{0.1});
    } else {
      oa = std::make_unique<optim::Adam<double, Cpu>>(a.params(), optim::AdamOptions{0.1});
      ob = std::make_unique<optim::Adam<double, Cpu>>(b.params(), optim::AdamOptions{0.1});
    }
    a.gradients();
    b.gradients();
    oa->step();
    ob->step();
    // Two replayed updates counted but skipped (their scalars drawn, nothing applied):
    std::vector<double> apply(oa->replay_scalars()), skip(oa->replay_scalars());
    oa->next_scalars(apply.data(), skip.data());
    oa->next_scalars(apply.data(), skip.data());
    CHECK(oa->steps() == 3);
    oa->take_back(2);
    CHECK(oa->steps() == 1);
    a.gradients();
    b.gradients();
    oa->step();
    ob->step();
    CHECK(oa->steps() == 2);
    CHECK(a.flat() == b.flat());  // bias corrections of step 2 on both
    CHECK_THROWS_WITH_AS(oa->take_back(3), doctest::Contains("cannot take back 3 of 2"),
                         value_error);
    CHECK_THROWS_AS(oa->take_back(-1), value_error);
    CHECK(oa->steps() == 2);
    oa->take_back(0);
    CHECK(oa->steps() == 2);
  }
}

// Backend parity cases: every op, forward and backward, the loss, Adam, a whole network
// and the trainer, written once as templates on the backend. The CPU instantiation is
// compiled by the host compiler (with Eigen), the CUDA one by nvcc (without Eigen), and
// the test compares their outputs by normalised error with a per-case tolerance.
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <siam/autodiff/batchnorm.hpp>
#include <siam/autodiff/conv.hpp>
#include <siam/autodiff/elementwise.hpp>
#include <siam/autodiff/metric.hpp>
#include <siam/autodiff/ops.hpp>
#include <siam/autodiff/pool.hpp>
#include <siam/autodiff/reduce.hpp>
#include <siam/autodiff/structure.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/loss/contrastive.hpp>
#include <siam/loss/mining.hpp>
#include <siam/nn/batchnorm.hpp>
#include <siam/nn/conv.hpp>
#include <siam/nn/layers.hpp>
#include <siam/nn/residual.hpp>
#include <siam/optim/adam.hpp>
#include <siam/train/siamese_trainer.hpp>
#include <string>
#include <vector>

#include "optim_cases.hpp"

namespace parity {

using Outputs = std::map<std::string, std::vector<double>>;

/// Normalised error tolerance of each case (FP32, no TF32), by name prefix.
inline double tolerance(const std::string& name) {
  // conv. (cuDNN against im2col: FP32 sums in different orders), pool. (selection and
  // routing are exact), lenet. (the LeNet Siamese network end to end)
  static const std::vector<std::pair<std::string, double>> table = {
      {"expr.", 1e-6},          {"reduce.", 1e-5},  {"matmul.", 1e-5},  {"grad.", 1e-5},
      {"loss.", 1e-5},          {"adam.", 1e-5},    {"network.", 1e-4}, {"gather.", 0.0},
      {"trainer.losses", 1e-3}, {"trainer.", 1e-2}, {"zero.", 1e-5},    {"conv.", 1e-5},
      {"pool.", 1e-6},          {"lenet.", 1e-4}};
  if (name.rfind("optim.", 0) == 0) return 1e-5;  // optimizers, clipping: optim_cases.hpp
  for (const auto& [prefix, tol] : table)
    if (name.rfind(prefix, 0) == 0) return tol;
  return 1e-6;
}

template <class B>
siam::Tensor<float, B> random(siam::Shape s, std::uint64_t seed, double lo = -1, double hi = 1) {
  siam::Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(s.size()));
  for (auto& x : v)
    x = static_cast<float>(rng.uniform(lo, hi));
  return siam::Tensor<float, B>::from(s, std::span<const float>(v));
}

template <class B>
std::vector<double> host(const siam::Tensor<float, B>& t) {
  const auto v = t.to_vector();
  return {v.begin(), v.end()};
}
template <class B>
std::vector<double> host(siam::View<float, B> t) {
  const auto v = t.to_vector();
  return {v.begin(), v.end()};
}

/// Runs one group of cases. An exception is printed and recorded as the case
/// "error.<group>" (no values), which the test reports as a failure, so one group that
/// throws does not hide the others.
template <class F>
void guarded(Outputs& out, const std::string& group, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity group %s threw: %s\n", group.c_str(), e.what());
    out["error." + group] = {};
  }
}

template <class B>
Outputs run_all() {
  using namespace siam;
  using Tf = Tensor<float, B>;
  Outputs out;
  // ---- expressions
  guarded(out, "expr", [&] {
    Tf a = random<B>(Shape{333, 301}, 1), b = random<B>(Shape{333, 301}, 2, 0.5, 2);
    Tf r = relu(a * 2.f - b) / b + exp(a) - log(b) + sqrt(b) + square(a) - (-a) + maximum(a, 0.1f) +
           minimum(b, 1.f) + step(a) + relu_grad(b, a);
    out["expr.elementwise"] = host(r);
    Tf row = random<B>(Shape{301}, 3), col = random<B>(Shape{333, 1}, 4),
       s = random<B>(Shape{1}, 5);
    Tf q = a + broadcast_rows(row, 333) * broadcast_cols(col, 301) -
           broadcast_scalar(s, Shape{333, 301});
    out["expr.broadcast"] = host(q);
    Tf f1(Shape{1000}), f2(Shape{1000}), f3(Shape{1000});
    Tf g = random<B>(Shape{1000}, 6);
    fused(assign_to(f1.view(), g * 2.f), assign_to(f2.view(), f1 + g),
          assign_to(f3.view(), f2 * f1));
    out["expr.fused"] = host(f3);
    Tf all = sum_all(a), rs = sum_rows(a), cs = sum_cols(a), empty = sum_all(Tf(Shape{0, 3}));
    out["reduce.sum_all"] = host(all);
    out["reduce.sum_rows"] = host(rs);
    out["reduce.sum_cols"] = host(cs);
    out["reduce.empty"] = host(empty);
    Tf big = random<B>(Shape{1 << 20}, 7);
    out["reduce.sum_all_large"] = host(Tf(sum_all(big)));
    // Tall and narrow: the CUDA backend's column totals take their two-level path here.
    Tf tall = random<B>(Shape{100000, 5}, 8);
    out["reduce.sum_rows_tall"] = host(Tf(sum_rows(tall)));
    out["reduce.sum_cols_tall"] = host(Tf(sum_cols(tall)));
  });
  // ---- matmul, all transposes
  guarded(out, "matmul", [&] {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const index_t m = 257, n = 129, k = 300;
        Tf a = random<B>(ta ? Shape{k, m} : Shape{m, k}, 10),
           b = random<B>(tb ? Shape{n, k} : Shape{k, n}, 11);
        Tf c = matmul(a, b, ta, tb);
        out["matmul." + std::string(ta ? "T" : "N") + (tb ? "T" : "N")] = host(c);
      }
    // ---- skinny products (a dimension of 2), which the CUDA backend runs without cuBLAS
    for (auto [m, n, k] : {std::tuple<index_t, index_t, index_t>{360, 2, 1024},
                           {360, 1024, 2},
                           {1024, 2, 360},
                           {7, 3, 5}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          Tf a = random<B>(ta ? Shape{k, m} : Shape{m, k}, 12),
             b = random<B>(tb ? Shape{n, k} : Shape{k, n}, 13);
          Tf c = matmul(a, b, ta, tb);
          c += matmul(a, b, ta, tb);  // beta = 1
          out["matmul.skinny." + std::to_string(m) + "x" + std::to_string(n) + "x" +
              std::to_string(k) + (ta ? "T" : "N") + (tb ? "T" : "N")] = host(c);
        }
  });
  // ---- every differentiable op, forward and backward, through a fixed projection
  auto grad_case =
      [&](const std::string& name, std::vector<Tf> inputs,
          const std::function<Var<float, B>(Tape<float, B>&, std::vector<Var<float, B>>&)>& f) {
        guarded(out, "grad." + name, [&] {
          std::vector<Parameter<float, B>> ps;
          for (auto& x : inputs)
            ps.emplace_back("x", std::move(x));
          Tape<float, B> tape;
          std::vector<Var<float, B>> vs;
          for (auto& p : ps)
            vs.push_back(tape.param(p));
          Var<float, B> y = f(tape, vs);
          Tf r = random<B>(y.shape(), 99);
          Var<float, B> l = y.shape().size() == 1 ? y : sum(y * tape.constant(r));
          tape.backward(l);
          out["grad." + name + ".value"] = host(y.value());
          for (std::size_t i = 0; i < ps.size(); ++i)
            out["grad." + name + ".d" + std::to_string(i)] = host(ps[i].gradient());
        });
      };
  using V = std::vector<Var<float, B>>;
  using Tp = Tape<float, B>;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      grad_case("matmul" + std::to_string(ta) + std::to_string(tb),
                {random<B>(ta ? Shape{20, 30} : Shape{30, 20}, 20),
                 random<B>(tb ? Shape{40, 20} : Shape{20, 40}, 21)},
                [ta, tb](Tp&, V& v) { return matmul(v[0], v[1], ta, tb); });
  grad_case("add", {random<B>(Shape{30, 20}, 22), random<B>(Shape{30, 20}, 23)},
            [](Tp&, V& v) { return v[0] + v[1]; });
  grad_case("sub", {random<B>(Shape{30, 20}, 22), random<B>(Shape{30, 20}, 23)},
            [](Tp&, V& v) { return v[0] - v[1]; });
  grad_case("mul", {random<B>(Shape{30, 20}, 22), random<B>(Shape{30, 20}, 23)},
            [](Tp&, V& v) { return v[0] * v[1]; });
  grad_case("relu", {random<B>(Shape{30, 20}, 24)}, [](Tp&, V& v) { return relu(v[0]); });
  grad_case("add_relu", {random<B>(Shape{30, 20}, 22), random<B>(Shape{30, 20}, 23)},
            [](Tp&, V& v) { return add_relu(v[0], v[1]); });
  grad_case("square", {random<B>(Shape{30, 20}, 24)}, [](Tp&, V& v) { return square(v[0]); });
  grad_case("sqrt", {random<B>(Shape{30, 20}, 24, 0.5, 2)}, [](Tp&, V& v) { return sqrt(v[0]); });
  grad_case("sum", {random<B>(Shape{30, 20}, 24)}, [](Tp&, V& v) { return sum(v[0]); });
  grad_case("mean", {random<B>(Shape{30, 20}, 24)}, [](Tp&, V& v) { return mean(v[0]); });
  grad_case("add_bias", {random<B>(Shape{30, 20}, 25), random<B>(Shape{20}, 26)},
            [](Tp&, V& v) { return add_bias(v[0], v[1]); });
  grad_case("slice_concat", {random<B>(Shape{30, 20}, 27), random<B>(Shape{5, 20}, 28)},
            [](Tp&, V& v) { return concat_rows(slice_rows(v[0], 3, 10), v[1]); });
  grad_case("linear",
            {random<B>(Shape{50, 30}, 29), random<B>(Shape{30, 40}, 30), random<B>(Shape{40}, 31)},
            [](Tp&, V& v) { return linear(v[0], v[1], v[2]); });
  grad_case("linear_relu",
            {random<B>(Shape{50, 30}, 29), random<B>(Shape{30, 40}, 30), random<B>(Shape{40}, 31)},
            [](Tp&, V& v) { return linear_relu(v[0], v[1], v[2]); });
  // ---- batch normalisation (training and inference forms, both layouts), pooling, and a
  // residual block with BatchNorm: no convolution, so they need no cuDNN
  grad_case(
      "batch_norm.features",
      {random<B>(Shape{12, 5}, 40), random<B>(Shape{5}, 41, 0.5, 1.5), random<B>(Shape{5}, 42)},
      [](Tp&, V& v) { return batch_norm(v[0], v[1], v[2], 1e-5f); });
  grad_case("batch_norm.channels",
            {random<B>(Shape{3, 4, 5, 6}, 43), random<B>(Shape{4}, 44, 0.5, 1.5),
             random<B>(Shape{4}, 45)},
            [](Tp&, V& v) { return batch_norm(v[0], v[1], v[2], 1e-5f); });
  // The host engine folds the ReLU into BatchNorm's passes; a device runs the two ops.
  grad_case("batch_norm_relu.channels",
            {random<B>(Shape{3, 4, 5, 6}, 54), random<B>(Shape{4}, 55, 0.5, 1.5),
             random<B>(Shape{4}, 56)},
            [](Tp&, V& v) { return batch_norm_relu(v[0], v[1], v[2], 1e-5f); });
  const Tf bn_mean = random<B>(Shape{4}, 49), bn_var = random<B>(Shape{4}, 50, 0.5, 2);
  grad_case("batch_norm.inference",
            {random<B>(Shape{3, 4, 5, 6}, 46), random<B>(Shape{4}, 47, 0.5, 1.5),
             random<B>(Shape{4}, 48)},
            [&](Tp& t, V& v) {
              return batch_norm_inference(v[0], v[1], v[2], t.constant(bn_mean), t.constant(bn_var),
                                          1e-5f);
            });
  grad_case("global_avg_pool", {random<B>(Shape{3, 4, 5, 6}, 51)},
            [](Tp&, V& v) { return global_avg_pool2d(v[0]); });
  grad_case("avg_pool", {random<B>(Shape{3, 4, 6, 6}, 52)},
            [](Tp&, V& v) { return avg_pool2d(v[0], 2, 2); });
  guarded(out, "grad.residual", [&] {
    // relu(BN(Dense(relu(BN(Dense x)))) + BN(Dense x)): a projected block, in training mode
    Rng rng(53);
    nn::Sequential<float, B> body, proj;
    body.template add<nn::Dense<float, B>>(6, 5, rng)
        .template add<nn::BatchNorm<float, B>>(5)
        .template add<nn::ReLU<float, B>>()
        .template add<nn::Dense<float, B>>(5, 5, rng)
        .template add<nn::BatchNorm<float, B>>(5);
    proj.template add<nn::Dense<float, B>>(6, 5, rng).template add<nn::BatchNorm<float, B>>(5);
    nn::Sequential<float, B> net;
    net.add(std::make_unique<nn::Residual<float, B>>(std::move(body), std::move(proj)));
    net.template add<nn::ReLU<float, B>>();
    Parameter<float, B> x("x", random<B>(Shape{10, 6}, 54));
    Tape<float, B> tape;
    auto y = net.forward(tape.param(x));
    const Tf r = random<B>(y.shape(), 55);
    tape.backward(sum(y * tape.constant(r)));
    out["grad.residual.value"] = host(y.value());
    out["grad.residual.dx"] = host(x.gradient());
    const auto ps = net.parameters();
    for (std::size_t i = 0; i < ps.size(); ++i)
      out["grad.residual.d" + std::to_string(i)] = host(ps[i]->gradient());
    const auto bs = net.buffers();  // running statistics after one training step
    for (std::size_t i = 0; i < bs.size(); ++i)
      out["grad.residual.buffer" + std::to_string(i)] = host(bs[i]->value);
  });
  // ---- the toolkit's ops (elementwise.hpp, reduce.hpp, structure.hpp, metric.hpp)
  guarded(out, "toolkit", [&] {
    auto a = [] { return random<B>(Shape{30, 20}, 70); };
    auto pos = [] { return random<B>(Shape{30, 20}, 71, 0.5, 2); };
    grad_case("scalar_affine", {a()}, [](Tp&, V& v) { return 2.0f - v[0] * 3.0f + 0.5f; });
    grad_case("scalar_div", {pos()}, [](Tp&, V& v) { return 2.0f / v[0]; });
    grad_case("div", {a(), pos()}, [](Tp&, V& v) { return v[0] / v[1]; });
    grad_case("neg", {a()}, [](Tp&, V& v) { return -v[0]; });
    grad_case("exp", {a()}, [](Tp&, V& v) { return exp(v[0]); });
    grad_case("log", {pos()}, [](Tp&, V& v) { return log(v[0]); });
    grad_case("abs", {a()}, [](Tp&, V& v) { return abs(v[0]); });
    grad_case("tanh", {a()}, [](Tp&, V& v) { return tanh(v[0]); });
    grad_case("sigmoid", {a()}, [](Tp&, V& v) { return sigmoid(v[0]); });
    grad_case("softplus", {a()}, [](Tp&, V& v) { return softplus(v[0]); });
    grad_case("pow", {pos()}, [](Tp&, V& v) { return pow(v[0], 2.5f); });
    grad_case("clamp", {a()}, [](Tp&, V& v) { return clamp(v[0], -0.3f, 0.4f); });
    grad_case("maximum", {a(), random<B>(Shape{30, 20}, 72)},
              [](Tp&, V& v) { return maximum(v[0], v[1]); });
    grad_case("minimum", {a(), random<B>(Shape{30, 20}, 72)},
              [](Tp&, V& v) { return minimum(v[0], v[1]); });
    grad_case("sum_axis0", {a()}, [](Tp&, V& v) { return sum(v[0], 0); });
    grad_case("mean_axis1", {a()}, [](Tp&, V& v) { return mean(v[0], 1, true); });
    grad_case("logsumexp_rows", {a()}, [](Tp&, V& v) { return logsumexp_rows(v[0] * 5.0f); });
    grad_case("broadcast_rows", {random<B>(Shape{20}, 73)},
              [](Tp&, V& v) { return broadcast_rows(v[0], 30); });
    grad_case("broadcast_cols", {random<B>(Shape{30, 1}, 74)},
              [](Tp&, V& v) { return broadcast_cols(v[0], 20); });
    grad_case("broadcast_scalar", {random<B>(Shape{1}, 75)}, [](Tp&, V& v) {
      return broadcast_scalar(v[0], Shape{30, 20});
    });
    grad_case("gather_rows", {a()}, [](Tp&, V& v) {
      return gather_rows(v[0], std::vector<std::uint32_t>{29, 0, 3, 3, 17, 3, 29});
    });
    grad_case("transpose", {a()}, [](Tp&, V& v) { return transpose(v[0]); });
    grad_case("reshape", {a()}, [](Tp&, V& v) { return reshape(v[0], Shape{600}); });
    grad_case("l2_normalize_rows", {a()}, [](Tp&, V& v) { return l2_normalize_rows(v[0]); });
    grad_case("pairwise_sq_distances", {a(), random<B>(Shape{25, 20}, 76)},
              [](Tp&, V& v) { return pairwise_sq_distances(v[0], v[1]); });
    grad_case("cosine_similarity_matrix", {a(), random<B>(Shape{25, 20}, 76)},
              [](Tp&, V& v) { return cosine_similarity_matrix(v[0], v[1]); });
  });
  // ---- the loss, both hinge branches
  guarded(out, "loss.hinge", [&] {
    Tf y = Tf::from(Shape{6}, {1, 0, 1, 0, 0, 1});
    for (double margin : {0.3, 3.0})
      grad_case("contrastive_m" + std::to_string(margin).substr(0, 3),
                {random<B>(Shape{6, 2}, 32), random<B>(Shape{6, 2}, 33)},
                [&y, margin](Tp& t, V& v) {
                  return contrastive_loss(v[0], v[1], t.constant(y), {margin});
                });
  });
  guarded(out, "loss.other", [&] {
    Tf y = Tf::from(Shape{6}, {1, 0, 1, 0, 0, 1});
    grad_case("contrastive_stacked", {random<B>(Shape{12, 2}, 34)},
              [&y](Tp& t, V& v) { return contrastive_loss_stacked(v[0], t.constant(y), {0.3}); });
  });
  // ---- Adam, three steps with fixed gradients
  // ---- batch-hard mining (the GPU mines on the device, the CPU on the host): the loss and
  // the embeddings' gradient
  guarded(out, "loss.batch_hard", [&] {
    constexpr index_t n = 40;
    Parameter<float, B> e("e", random<B>(Shape{n, 6}, 41));
    std::vector<std::int64_t> labels(n);
    for (index_t i = 0; i < n; ++i)
      labels[static_cast<std::size_t>(i)] = (i * 3) % 8;
    Tape<float, B> tape;
    Var<float, B> l = batch_hard_triplet_loss(tape.param(e), labels);
    tape.backward(l);
    out["loss.batch_hard.value"] = host(l.value());
    out["loss.batch_hard.grad"] = host(e.gradient());
  });
  guarded(out, "adam", [&] {
    Parameter<float, B> p("p", random<B>(Shape{100, 7}, 40));
    optim::Adam<float, B> adam({&p}, {1e-2, 0.9, 0.99, 1e-8});
    for (int s = 0; s < 3; ++s) {
      p.grad = random<B>(Shape{100, 7}, 41 + s);
      p.grad_fresh = false;
      adam.step();
    }
    out["adam.params"] = host(p.value);
    out["adam.m"] = host(adam.first_moments()[0]);
    out["adam.v"] = host(adam.second_moments()[0]);
  });
  // ---- a whole Dense-ReLU-Dense network through a Siamese loss
  guarded(out, "network", [&] {
    Rng rng(50);
    auto net = nn::mlp<float, B>({64, 48, 48, 2}, rng);
    Tf x = random<B>(Shape{40, 64}, 51), y = Tf::from(Shape{20}, std::vector<float>(20, 1.f));
    Tape<float, B> tape;
    auto f = net.forward(tape.constant(x));
    auto l = contrastive_loss(slice_rows(f, 0, 20), slice_rows(f, 20, 20), tape.constant(y), {0.3});
    tape.backward(l);
    out["network.features"] = host(f.value());
    out["network.loss"] = host(l.value());
    auto ps = net.parameters();
    // The output bias's gradient is exactly zero (the loss depends on F1 - F2 only):
    // both backends must give (near) zero; a relative comparison would be meaningless.
    for (std::size_t i = 0; i + 1 < ps.size(); ++i)
      out["network.grad" + std::to_string(i)] = host(ps[i]->gradient());
    out["zero.network.output_bias_grad"] = host(ps.back()->gradient());
  });
#if defined(SIAM_HAS_CUDNN)
  // ---- conv2d (LeNet's second layer on 4 images; a strided, padded one), max_pool2d,
  // and the LeNet Siamese network: values and every gradient
  guarded(out, "conv", [&] {
    struct C {
      const char* name;
      Shape x, w;
      index_t s, p;
    };
    for (const C& c : {C{"lenet2", Shape{4, 20, 12, 12}, Shape{50, 20, 5, 5}, 1, 0},
                       C{"strided", Shape{3, 4, 9, 9}, Shape{8, 4, 3, 3}, 2, 1}}) {
      Parameter<float, B> x("x", random<B>(c.x, 60)), w("w", random<B>(c.w, 61)),
          b("b", random<B>(Shape{c.w[0]}, 62));
      Tape<float, B> tape;
      auto y = conv2d(tape.param(x), tape.param(w), tape.param(b), c.s, c.p);
      const Tf r = random<B>(y.shape(), 63);
      tape.backward(sum(y * tape.constant(r)));
      const std::string n = std::string("conv.") + c.name;
      out[n + ".y"] = host(y.value());
      out[n + ".dx"] = host(x.gradient());
      out[n + ".dw"] = host(w.gradient());
      out[n + ".db"] = host(b.gradient());
    }
    Parameter<float, B> x("x", random<B>(Shape{4, 20, 24, 24}, 64));
    Tape<float, B> tape;
    auto y = max_pool2d(tape.param(x), 2, 2);
    const Tf r = random<B>(y.shape(), 65);
    tape.backward(sum(y * tape.constant(r)));
    out["pool.y"] = host(y.value());
    out["pool.dx"] = host(x.gradient());
  });
  guarded(out, "lenet", [&] {
    Rng rng(66);
    auto net = nn::lenet<float, B>(rng);
    Tf x = random<B>(Shape{12, 784}, 67, 0, 1);
    std::vector<float> lab(6);
    for (std::size_t i = 0; i < lab.size(); ++i)
      lab[i] = float(i % 2);
    Tf y = Tf::from(Shape{6}, std::span<const float>(lab));
    Tape<float, B> tape;
    auto f = net.forward(tape.constant(x));
    tape.backward(contrastive_loss_stacked(f, tape.constant(y), {0.3}));
    out["lenet.features"] = host(f.value());
    auto ps = net.parameters();
    for (std::size_t i = 0; i + 1 < ps.size(); ++i)
      out["lenet.grad" + std::to_string(i)] = host(ps[i]->gradient());
  });
#endif
  // ---- gather and the trainer (a small network, a few steps on synthetic digits)
  guarded(out, "gather_trainer", [&] {
    Tf src = random<B>(Shape{10, 5}, 60), dst(Shape{4, 5});
    const std::uint32_t idx[4] = {9, 0, 3, 3};
    B::gather_rows(dst.data(), src.data(), idx, 4, 5);
    out["gather.rows"] = host(dst);
    const auto digits = data::synthetic_digits(200, 61);
    SiameseConfig cfg;
    cfg.layers = {784, 64, 2};
    cfg.batch_pairs = 32;
    cfg.adam.lr = 1e-3;
    SiameseTrainer<float, B> trainer(digits, cfg);
    std::vector<double> losses;
    for (int s = 0; s < 5; ++s)
      losses.push_back(trainer.step());
    out["trainer.losses"] = losses;
    // Centred: the output bias's gradient is exactly zero, so each backend's rounding
    // noise there becomes a +-lr Adam step, a translation of the whole embedding.
    const auto emb = trainer.embed(digits, 64);
    const std::size_t n = emb.size() / 2;
    double mx = 0, my = 0;
    for (std::size_t i = 0; i < n; ++i) {
      mx += emb[2 * i] / double(n);
      my += emb[2 * i + 1] / double(n);
    }
    std::vector<double> centred(emb.size());
    for (std::size_t i = 0; i < n; ++i) {
      centred[2 * i] = emb[2 * i] - mx;
      centred[2 * i + 1] = emb[2 * i + 1] - my;
    }
    out["trainer.embedding_centred"] = centred;
  });
  guarded(out, "optim", [&] { optim_cases<B>(out); });  // SGD, AdamW, clipping
  return out;
}

}  // namespace parity

// Backend parity cases of the optimizers and of gradient clipping (named "optim.*"):
// three steps of each with fixed gradients over ten parameters (two fused batches of
// eight, sizes from 1 to 70 000), with a learning-rate change between steps. The same
// arithmetic in FP32 on both sides: the tolerance (1e-5 normalised) covers reordered
// sums and the GPU's division and square root.
#pragma once

#include <map>
#include <siam/optim/adamw.hpp>
#include <siam/optim/clip.hpp>
#include <siam/optim/sgd.hpp>
#include <siam/random.hpp>
#include <string>
#include <vector>

namespace parity {

template <class B>
void optim_cases(std::map<std::string, std::vector<double>>& out) {
  using namespace siam;
  auto random = [](Shape s, std::uint64_t seed) {
    Rng rng(seed);
    std::vector<float> v(static_cast<std::size_t>(s.size()));
    for (auto& x : v)
      x = static_cast<float>(rng.uniform(-1, 1));
    return Tensor<float, B>::from(s, std::span<const float>(v));
  };
  auto host = [](const Tensor<float, B>& t) {
    const auto v = t.to_vector();
    return std::vector<double>(v.begin(), v.end());
  };
  const index_t sizes[10][2] = {{1, 1}, {7, 3},   {100, 700}, {700, 1},  {5, 129},
                                {1, 9}, {64, 64}, {2, 2},     {300, 31}, {1, 1000}};
  // Fresh parameters and fixed gradients, the same on both backends.
  auto make_params = [&](std::uint64_t seed) {
    std::vector<Parameter<float, B>> ps;
    for (int i = 0; i < 10; ++i)
      ps.emplace_back("p", random(Shape{sizes[i][0], sizes[i][1]}, seed + i));
    return ps;
  };
  auto set_grads = [&](std::vector<Parameter<float, B>>& ps, std::uint64_t seed) {
    for (std::size_t i = 0; i < ps.size(); ++i) {
      ps[i].grad = random(ps[i].value.shape(), seed + i);
      ps[i].grad_fresh = false;
    }
  };
  auto pointers = [](std::vector<Parameter<float, B>>& ps) {
    std::vector<Parameter<float, B>*> v;
    for (auto& p : ps)
      v.push_back(&p);
    return v;
  };
  auto record = [&](const std::string& name, std::vector<Parameter<float, B>>& ps,
                    optim::Optimizer<float, B>& opt) {
    for (std::size_t i = 0; i < ps.size(); ++i)
      out["optim." + name + ".p" + std::to_string(i)] = host(ps[i].value);
    const auto st = opt.state_tensors();
    for (std::size_t i = 0; i < st.size(); ++i)
      out["optim." + name + ".state" + std::to_string(i)] = host(*st[i]);
  };
  auto run = [&](const std::string& name, auto make) {
    auto ps = make_params(300);
    auto opt = make(pointers(ps));
    for (int s = 0; s < 3; ++s) {
      if (s == 2) opt.set_lr(opt.lr() * 0.5);
      set_grads(ps, 400 + 10 * s);
      opt.step();
    }
    record(name, ps, opt);
  };
  using P = std::vector<Parameter<float, B>*>;
  run("sgd", [](P p) { return optim::SGD<float, B>(p, {0.1}); });
  run("sgd_momentum", [](P p) { return optim::SGD<float, B>(p, {0.1, 0.9, 0.2, 1e-2}); });
  run("sgd_nesterov", [](P p) { return optim::SGD<float, B>(p, {0.1, 0.9, 0, 1e-2, true}); });
  run("adamw", [](P p) { return optim::AdamW<float, B>(p, {1e-2, 0.9, 0.99, 1e-8, 0.1}); });
  // ---- clipping: the norm, then the clipped gradients (scaled, and not scaled)
  {
    auto ps = make_params(500);
    set_grads(ps, 600);
    optim::ClipWorkspace<float, B> ws;
    const double norm = optim::clip_grad_norm(pointers(ps), 1.0, ws);
    out["optim.clip.norm"] = {norm};
    for (std::size_t i = 0; i < ps.size(); ++i)
      out["optim.clip.g" + std::to_string(i)] = host(ps[i].gradient());
    out["optim.clip.norm_after"] = {optim::clip_grad_norm(pointers(ps), 1e9, ws)};
  }
}

}  // namespace parity

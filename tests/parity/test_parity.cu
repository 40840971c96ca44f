// Backend parity: every case of cases.hpp on the CUDA backend against the CPU backend,
// by normalised error ||gpu - cpu|| / max(||cpu||, 1e-3) with the per-case tolerance.
// Cases named "zero.*" have the exact answer 0 (the output bias of a contrastive
// network: its gradient sums to zero), so both sides must be below the tolerance.
// Without a CUDA device the program says so and exits 77 (CTest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <iterator>
#include <siam/backend/cuda.hpp>
#include <string>
#if defined(SIAM_HAS_CUDNN)
#include <siam/backend/cudnn.hpp>
#endif

#include "cases.hpp"

namespace parity {
Outputs run_cpu();
}

namespace {

struct Both {
  parity::Outputs cpu, gpu;
};

// Both sides' outputs, computed once for all the test cases below (a group that throws is
// recorded as "error.<group>" by parity::guarded, so the other groups still report).
const Both& outputs() {
  static const Both both{parity::run_cpu(), parity::run_all<siam::Cuda>()};
  return both;
}

// Compares every case whose name starts with one of `prefixes` (all cases not claimed by
// another group when `prefixes` is empty); each case is its own CHECK, so a failing case
// hides nothing.
void compare(std::initializer_list<const char*> prefixes) {
  static const char* const groups[] = {"expr.",  "reduce.",  "matmul.",  "grad.",  "loss.",
                                       "adam.",  "network.", "zero.",    "conv.",  "pool.",
                                       "lenet.", "gather.",  "trainer.", "optim.", "error."};
  const auto starts = [](const std::string& name, const char* p) { return name.rfind(p, 0) == 0; };
  const auto wanted = [&](const std::string& name) {
    if (prefixes.size() == 0)
      return std::none_of(std::begin(groups), std::end(groups),
                          [&](const char* p) { return starts(name, p); });
    return std::any_of(prefixes.begin(), prefixes.end(),
                       [&](const char* p) { return starts(name, p); });
  };
  const Both& b = outputs();
  std::size_t compared = 0;
  for (const parity::Outputs* side : {&b.cpu, &b.gpu})
    for (const auto& [name, values] : *side)
      if (wanted(name) && starts(name, "error.")) {
        (void)values;
        FAIL_CHECK("group " << name.substr(6) << " threw on the "
                            << (side == &b.cpu ? "CPU" : "GPU") << " (message on stderr)");
      }
  for (const auto& [name, ref] : b.cpu) {
    if (!wanted(name) || starts(name, "error.")) continue;
    CAPTURE(name);
    const auto it = b.gpu.find(name);
    if (it == b.gpu.end()) {
      FAIL_CHECK("case " << name << " has no GPU output");
      continue;
    }
    const auto& got = it->second;
    if (got.size() != ref.size()) {
      FAIL_CHECK("case " << name << ": " << got.size() << " GPU values, " << ref.size()
                         << " CPU values");
      continue;
    }
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      diff += (got[i] - ref[i]) * (got[i] - ref[i]);
      norm += ref[i] * ref[i];
    }
    double err = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-3);
    if (starts(name, "zero.")) {  // exact answer 0: both sides must be tiny
      err = 0;
      for (std::size_t i = 0; i < ref.size(); ++i)
        err = std::max({err, std::abs(ref[i]), std::abs(got[i])});
    }
    const double tol = parity::tolerance(name);
    std::printf("%-32s n=%-8zu err=%.3e tol=%.0e %s\n", name.c_str(), ref.size(), err, tol,
                err <= tol ? "ok" : "FAIL");
    CHECK(err <= tol);
    ++compared;
  }
  for (const auto& [name, values] : b.gpu)
    if (wanted(name) && !starts(name, "error.") && b.cpu.count(name) == 0) {
      (void)values;
      FAIL_CHECK("case " << name << " has no CPU output");
    }
  if (prefixes.size() != 0) CHECK(compared > 0);  // the group ran on both sides
}

}  // namespace

TEST_CASE("parity: expressions and reductions") {
  compare({"expr.", "reduce."});
}
TEST_CASE("parity: matmul, all transposes and the skinny kernel") {
  compare({"matmul."});
}
TEST_CASE("parity: every differentiable op, forward and backward") {
  compare({"grad."});
}
TEST_CASE("parity: the loss") {
  compare({"loss."});
}
TEST_CASE("parity: Adam") {
  compare({"adam."});
}
TEST_CASE("parity: a whole network") {
  compare({"network.", "zero."});
}
#if defined(SIAM_HAS_CUDNN)
TEST_CASE("parity: conv2d and max_pool2d (cuDNN, FP32 math)") {
  compare({"conv.", "pool."});
}
TEST_CASE("parity: the LeNet Siamese network") {
  compare({"lenet."});
}
#endif
TEST_CASE("parity: gather and the trainer") {
  compare({"gather.", "trainer."});
}
TEST_CASE("parity: optimizers and clipping") {
  compare({"optim."});
}
TEST_CASE("parity: every other case, and no group threw") {
  compare({});
  const Both& b = outputs();
  for (const parity::Outputs* side : {&b.cpu, &b.gpu})
    for (const auto& [name, values] : *side) {
      (void)values;
      CHECK_MESSAGE(name.rfind("error.", 0) != 0, "a group threw: " << name);
    }
}

TEST_CASE("the caching pool reaches a steady state with varying batch sizes") {
  using namespace siam;
  Rng rng(1);
  auto net = nn::mlp<float, Cuda>({784, 256, 2}, rng);
  Tape<float, Cuda> tape;
  std::size_t after_first_cycle = 0;
  for (int it = 0; it < 40; ++it) {
    const index_t n = 100 + (it % 8) * 37;  // batch sizes cycle through 8 values
    Tensor<float, Cuda> x(Shape{n, 784});
    tape.reset();
    auto f = net.forward(tape.constant(x));
    tape.backward(sum(f));
    if (it == 7) after_first_cycle = cuda::pool_stats().cuda_malloc_calls;
  }
  cuda::synchronize();
  CHECK(cuda::pool_stats().cuda_malloc_calls == after_first_cycle);
}

TEST_CASE("a failed CUDA call becomes a typed siam::cuda_error" *
          doctest::test_suite("cuda-errors")) {
  using namespace siam;
  try {
    SIAM_CUDA_CHECK(cudaMemcpy(nullptr, reinterpret_cast<void*>(1), 4, cudaMemcpyDeviceToDevice));
    FAIL("no exception");
  } catch (const cuda_error& e) {
    CHECK(std::string(e.what()).find("cudaMemcpy") != std::string::npos);
  }
}

int main(int argc, char** argv) {
  if (!siam::cuda::device_available()) {
    std::printf("no CUDA device: GPU parity tests skipped\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}

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
#include <siam/backend/cuda.hpp>
#if defined(SIAM_HAS_CUDNN)
#include <siam/backend/cudnn.hpp>
#endif

#include "cases.hpp"

namespace parity {
Outputs run_cpu();
}

TEST_CASE("CUDA backend matches the CPU backend op by op") {
  const parity::Outputs cpu = parity::run_cpu();
  const parity::Outputs gpu = parity::run_all<siam::Cuda>();
  REQUIRE(cpu.size() == gpu.size());
  for (const auto& [name, ref] : cpu) {
    CAPTURE(name);
    const auto& got = gpu.at(name);
    REQUIRE(got.size() == ref.size());
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      diff += (got[i] - ref[i]) * (got[i] - ref[i]);
      norm += ref[i] * ref[i];
    }
    double err = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-3);
    if (name.rfind("zero.", 0) == 0) {  // exact answer 0: both sides must be tiny
      err = 0;
      for (std::size_t i = 0; i < ref.size(); ++i)
        err = std::max({err, std::abs(ref[i]), std::abs(got[i])});
    }
    const double tol = parity::tolerance(name);
    std::printf("%-32s n=%-8zu err=%.3e tol=%.0e %s\n", name.c_str(), ref.size(), err, tol,
                err <= tol ? "ok" : "FAIL");
    CHECK(err <= tol);
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

TEST_CASE("a failed CUDA call becomes a typed siam::cuda_error") {
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

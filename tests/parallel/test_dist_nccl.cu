// The NCCL communicator on one rank (CI has no GPU: exits 77, reported as skipped). Device
// buffers through every collective, the handshake over the MPI side, and a data-parallel
// step of a small network on the GPU compared with the one-process step.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "siam/backend/cuda.hpp"
#include "siam/nn/layers.hpp"
#include "siam/parallel/data_parallel.hpp"
#include "siam/parallel/nccl.hpp"

using namespace siam;
namespace {
parallel::NcclCommunicator* nccl = nullptr;
}

TEST_CASE("NCCL collectives on device buffers") {
  auto& c = *nccl;
  const int r = c.rank(), n = c.size();
  auto x = Tensor<float, Cuda>::from(Shape{3}, {1.0f + r, 2.0f, 3.0f});
  c.all_reduce_sum(std::span<float>(x.data(), 3));
  const auto v = x.to_vector();
  CHECK(v[1] == 2.0f * n);
  CHECK(v[0] == n + n * (n - 1) / 2.0f);
  auto d = Tensor<double, Cuda>::from(Shape{2}, {double(r), -1.0});
  c.broadcast(std::span<double>(d.data(), 2), 0);
  CHECK(d.to_vector() == std::vector<double>{0.0, -1.0});
  Tensor<float, Cuda> out(Shape{3 * n});
  c.all_gather(std::span<const float>(x.data(), 3), std::span<float>(out.data(), 3 * n));
  CHECK(out.to_vector()[0] == v[0]);
  c.barrier();
  parallel::handshake(c, "nccl test", 1, 3);
}

TEST_CASE("data-parallel step on the GPU equals the plain step") {
  Rng a(5), b(5);
  auto net = nn::mlp<float, Cuda>({6, 8, 2}, a);
  auto ref = nn::mlp<float, Cuda>({6, 8, 2}, b);
  parallel::DataParallel<float, Cuda> dp(*nccl, net.parameters());
  Rng data(9);
  std::vector<float> host(10 * 6);
  for (auto& v : host)
    v = static_cast<float>(data.normal());
  auto x = Tensor<float, Cuda>::from(Shape{10, 6}, std::span<const float>(host));
  Tape<float, Cuda> t1, t2;
  dp.step(10, [&](std::size_t, std::size_t) {
    t1.reset();
    auto l = sum(net.forward(t1.constant(x)));
    t1.backward(l);
    return l;
  });
  t2.reset();
  auto l2 = sum(ref.forward(t2.constant(x)));
  for (auto* p : ref.parameters())
    p->zero_grad();
  t2.backward(l2);
  CHECK(dp.loss() == doctest::Approx(static_cast<double>(l2.value().item())).epsilon(1e-6));
  for (std::size_t i = 0; i < ref.parameters().size(); ++i)
    CHECK(net.parameters()[i]->grad.to_vector() == ref.parameters()[i]->grad.to_vector());
}

int main(int argc, char** argv) {
  parallel::MpiEnvironment env(&argc, &argv);
  if (!cuda::device_available()) {
    std::printf("test_dist_nccl: skipped: no CUDA device\n");
    return 77;
  }
  parallel::MpiCommunicator mpi(env);
  parallel::NcclCommunicator comm(mpi);
  nccl = &comm;
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  nccl = nullptr;
  return rc;
}

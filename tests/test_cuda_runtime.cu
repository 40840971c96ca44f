// Tests of the CUDA runtime layer. The error-path tests run everywhere. Without a GPU the device
// tests are marked skipped (doctest counts them as such; with --no-skip they print "skipped: no
// CUDA device" and return), and main() exits with 77 so that CTest (SKIP_RETURN_CODE 77) reports
// the program as skipped rather than passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "siam/backend/cuda_runtime.hpp"

namespace {

namespace cu = siam::cuda;

bool gpu_present() {
  return cu::device_available();
}

#define SKIP_WITHOUT_GPU()                \
  do {                                    \
    if (!gpu_present()) {                 \
      MESSAGE("skipped: no CUDA device"); \
      return;                             \
    }                                     \
  } while (false)

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Row-major host matrix with a row stride of at least `cols`.
template <class T>
struct HostMatrix {
  int rows, cols, ld;
  std::vector<T> data;
  HostMatrix(int r, int c, int pad, std::mt19937& rng)
      : rows(r), cols(c), ld(c + pad), data(static_cast<std::size_t>(r) * (c + pad) + 1) {
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    for (auto& x : data)
      x = static_cast<T>(dist(rng));
  }
  T at(int r, int c) const { return data[static_cast<std::size_t>(r) * ld + c]; }
};

// The obvious triple loop, in double: C = alpha op(A) op(B) + beta C, all row-major.
template <class T>
std::vector<double> reference_gemm(bool ta, bool tb, int m, int n, int k, double alpha,
                                   const HostMatrix<T>& A, const HostMatrix<T>& B, double beta,
                                   const HostMatrix<T>& C) {
  std::vector<double> out(static_cast<std::size_t>(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int p = 0; p < k; ++p)
        acc += static_cast<double>(ta ? A.at(p, i) : A.at(i, p)) *
               static_cast<double>(tb ? B.at(j, p) : B.at(p, j));
      out[static_cast<std::size_t>(i) * n + j] = alpha * acc + beta * C.at(i, j);
    }
  return out;
}

// Runs gemm on the device for one configuration and returns the relative Frobenius error
// ||C_gpu - C_ref|| / ||C_ref|| (absolute error when C_ref is 0). Also checks that the padding
// between C's rows is left alone.
template <class T>
double gemm_error(bool ta, bool tb, int m, int n, int k, std::mt19937& rng,
                  std::optional<siam::MatmulPrecision> precision = std::nullopt) {
  const HostMatrix<T> A(ta ? k : m, ta ? m : k, 3, rng);
  const HostMatrix<T> B(tb ? n : k, tb ? k : n, 1, rng);
  HostMatrix<T> C(m, n, 2, rng);
  const T alpha = T(1.25), beta = T(-0.5);
  const std::vector<double> want = reference_gemm(ta, tb, m, n, k, alpha, A, B, beta, C);

  cu::DeviceBuffer<T> dA(A.data.size()), dB(B.data.size()), dC(C.data.size());
  cu::copy_to_device(dA.data(), A.data.data(), A.data.size());
  cu::copy_to_device(dB.data(), B.data.data(), B.data.size());
  cu::copy_to_device(dC.data(), C.data.data(), C.data.size());
  cu::gemm<T>(ta, tb, m, n, k, alpha, dA.data(), A.ld, dB.data(), B.ld, beta, dC.data(), C.ld,
              precision);
  std::vector<T> got(C.data.size());
  cu::copy_to_host(got.data(), dC.data(), got.size());

  double diff2 = 0.0, ref2 = 0.0;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      const double w = want[static_cast<std::size_t>(i) * n + j];
      const double d = static_cast<double>(got[static_cast<std::size_t>(i) * C.ld + j]) - w;
      diff2 += d * d;
      ref2 += w * w;
    }
    for (int j = n; j < C.ld; ++j) {
      const std::size_t idx = static_cast<std::size_t>(i) * C.ld + j;
      if (idx < got.size()) CHECK(got[idx] == C.data[idx]);
    }
  }
  return ref2 > 0.0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
}

struct Shape {
  int m, n, k;
};
constexpr Shape kShapes[] = {{1, 1, 1}, {37, 53, 19}, {53, 37, 64}, {5, 1, 300}, {1, 7, 2}};

// Restores the default (no TF32) even when a check throws.
struct Tf32Scope {
  explicit Tf32Scope(bool on) { cu::set_tf32(on); }
  ~Tf32Scope() { cu::set_tf32(false); }
  Tf32Scope(const Tf32Scope&) = delete;
  Tf32Scope& operator=(const Tf32Scope&) = delete;
};

}  // namespace

// ------------------------------------------------------------------------------------------------
// Run everywhere

TEST_CASE("throw_on_cuda_error names the call, the error, the file and the line") {
  CHECK_NOTHROW(cu::throw_on_cuda_error(cudaSuccess, "cudaFoo()", "file.cu", 1));
  try {
    cu::throw_on_cuda_error(cudaErrorMemoryAllocation, "cudaMalloc(&p, 64)", "alloc.cu", 42);
    FAIL("expected siam::cuda_error");
  } catch (const siam::cuda_error& e) {
    const std::string what = e.what();
    CHECK(contains(what, "cudaMalloc(&p, 64)"));
    CHECK(contains(what, "cudaErrorMemoryAllocation"));
    CHECK(contains(what, "alloc.cu:42"));
  }
}

TEST_CASE("throw_on_cublas_error names the call and the status") {
  CHECK_NOTHROW(cu::throw_on_cublas_error(CUBLAS_STATUS_SUCCESS, "cublasFoo()", "f.cu", 1));
  try {
    cu::throw_on_cublas_error(CUBLAS_STATUS_INVALID_VALUE, "cublasSgemm(h, ...)", "gemm.cu", 7);
    FAIL("expected siam::cuda_error");
  } catch (const siam::cuda_error& e) {
    const std::string what = e.what();
    CHECK(contains(what, "cublasSgemm(h, ...)"));
    CHECK(contains(what, "CUBLAS_STATUS_INVALID_VALUE"));
    CHECK(contains(what, "gemm.cu:7"));
  }
}

TEST_CASE("the check macros pass success through and report the call text and this file") {
  CHECK_NOTHROW(SIAM_CUDA_CHECK(cudaSuccess));
  CHECK_NOTHROW(SIAM_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  try {
    SIAM_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL("expected siam::cuda_error");
  } catch (const siam::cuda_error& e) {
    const std::string what = e.what();
    CHECK(contains(what, "cudaErrorInvalidValue failed"));
    CHECK(contains(what, "test_cuda_runtime.cu:"));
  }
  CHECK_THROWS_AS(SIAM_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED), siam::cuda_error);
}

TEST_CASE("device discovery never throws; require_device throws cuda_error without a device") {
  int count = -1;
  CHECK_NOTHROW(count = cu::device_count());
  CHECK(count >= 0);
  CHECK(cu::device_available() == (count > 0));
  if (count > 0) {
    CHECK_NOTHROW(cu::require_device());
  } else {
    try {
      cu::require_device();
      FAIL("expected siam::cuda_error");
    } catch (const siam::cuda_error& e) {
      MESSAGE(std::string(e.what()));
      CHECK(contains(e.what(), "a CUDA device was requested but none is available ("));
    }
    CHECK_THROWS_AS(cu::context(), siam::cuda_error);
    CHECK_THROWS_AS(cu::DeviceBuffer<float>(16), siam::cuda_error);
  }
}

TEST_CASE("empty DeviceBuffers and zero-size copies need no device") {
  cu::DeviceBuffer<float> empty;
  CHECK(empty.empty());
  CHECK(empty.data() == nullptr);
  cu::DeviceBuffer<double> zero(0);
  CHECK(zero.size() == 0);
  cu::DeviceBuffer<double> moved(std::move(zero));
  CHECK(moved.empty());
  CHECK_NOTHROW(cu::copy_to_device<float>(nullptr, nullptr, 0));
  CHECK_NOTHROW(cu::copy_to_host<float>(nullptr, nullptr, 0));
}

TEST_CASE("gemm rejects negative sizes and short leading dimensions before touching a device") {
  float x = 0.0f;
  CHECK_THROWS_AS(cu::gemm<float>(false, false, -1, 1, 1, 1.0f, &x, 1, &x, 1, 0.0f, &x, 1),
                  siam::value_error);
  // A is 4 x 3 row-major: lda must be at least 3.
  CHECK_THROWS_AS(cu::gemm<float>(false, false, 4, 2, 3, 1.0f, &x, 2, &x, 2, 0.0f, &x, 2),
                  siam::value_error);
  // trans_a: A is stored 3 x 4, so lda must be at least 4.
  CHECK_THROWS_AS(cu::gemm<float>(true, false, 4, 2, 3, 1.0f, &x, 3, &x, 2, 0.0f, &x, 2),
                  siam::value_error);
  // trans_b: B is stored 2 x 3, so ldb must be at least 3.
  CHECK_THROWS_AS(cu::gemm<float>(false, true, 4, 2, 3, 1.0f, &x, 3, &x, 2, 0.0f, &x, 2),
                  siam::value_error);
  CHECK_THROWS_AS(
      cu::gemm<double>(false, false, 4, 2, 3, 1.0, nullptr, 3, nullptr, 2, 0.0, nullptr, 2),
      siam::value_error);
  // Empty products are accepted and launch nothing.
  CHECK_NOTHROW(
      cu::gemm<float>(false, false, 0, 5, 3, 1.0f, nullptr, 3, nullptr, 5, 0.0f, nullptr, 5));
  CHECK_NOTHROW(
      cu::gemm<float>(false, false, 5, 0, 3, 1.0f, nullptr, 3, nullptr, 1, 0.0f, nullptr, 1));
}

// ------------------------------------------------------------------------------------------------
// Need a device

TEST_CASE("context: one non-blocking stream and a cuBLAS handle bound to it, no TF32 by default" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  cu::Context& ctx = cu::context();
  CHECK(&ctx == &cu::context(ctx.device()));
  unsigned flags = 0;
  REQUIRE(cudaStreamGetFlags(ctx.stream(), &flags) == cudaSuccess);
  CHECK(flags == cudaStreamNonBlocking);
  cudaStream_t bound = nullptr;
  REQUIRE(cublasGetStream(ctx.cublas(), &bound) == CUBLAS_STATUS_SUCCESS);
  CHECK(bound == ctx.stream());
  cublasMath_t mode{};
  REQUIRE(cublasGetMathMode(ctx.cublas(), &mode) == CUBLAS_STATUS_SUCCESS);
  CHECK(mode == CUBLAS_DEFAULT_MATH);
  CHECK_FALSE(cu::tf32_enabled());
  CHECK_THROWS_AS(cu::context(cu::device_count()), siam::value_error);
}

TEST_CASE("copy round trip: host -> device -> device -> host" * doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  std::vector<double> src(1000);
  for (std::size_t i = 0; i < src.size(); ++i)
    src[i] = 0.5 * static_cast<double>(i) - 7.0;
  cu::DeviceBuffer<double> a(src.size()), b(src.size());
  CHECK(a.size() == src.size());
  CHECK(a.bytes() == src.size() * sizeof(double));
  cu::copy_to_device(a.data(), src.data(), src.size());
  cu::copy_device(b.data(), a.data(), src.size());
  std::vector<double> back(src.size(), -1.0);
  cu::copy_to_host(back.data(), b.data(), back.size());
  CHECK(back == src);
}

TEST_CASE("pool reaches a steady state: no cudaMalloc after the first cycle of batch sizes" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  constexpr int kFeatures = 1024, kOut = 8, kCycle = 14;  // batch sizes 100, 120, ..., 360
  std::vector<float> ones(static_cast<std::size_t>(kFeatures) * kOut, 1.0f);
  cu::DeviceBuffer<float> w(ones.size());
  cu::copy_to_device(w.data(), ones.data(), ones.size());
  const cu::PoolStats start = cu::pool_stats();
  std::size_t mallocs_after_first_cycle = 0;
  bool all_exact = true;
  for (int it = 0; it < 50; ++it) {
    const int rows = 100 + (it % kCycle) * 20;
    std::vector<float> x(static_cast<std::size_t>(rows) * kFeatures, static_cast<float>(it + 1));
    cu::DeviceBuffer<float> dx(x.size()), dy(static_cast<std::size_t>(rows) * kOut);
    cu::DeviceBuffer<float> scratch(static_cast<std::size_t>(rows) * 3);  // a third size class
    cu::copy_to_device(dx.data(), x.data(), x.size());
    cu::gemm<float>(false, false, rows, kOut, kFeatures, 1.0f, dx.data(), kFeatures, w.data(), kOut,
                    0.0f, dy.data(), kOut);
    std::vector<float> y(dy.size());
    cu::copy_to_host(y.data(), dy.data(), y.size());
    for (float v : y)
      all_exact = all_exact && v == static_cast<float>(kFeatures * (it + 1));
    if (it == kCycle - 1) mallocs_after_first_cycle = cu::pool_stats().cuda_malloc_calls;
  }
  CHECK(all_exact);
  const cu::PoolStats end = cu::pool_stats();
  MESSAGE("reservation growths: " << start.cuda_malloc_calls << " before, "
                                  << mallocs_after_first_cycle << " after the first cycle, "
                                  << end.cuda_malloc_calls << " after 50 iterations; reserved "
                                  << end.bytes_reserved << " B, peak in use "
                                  << end.peak_bytes_in_use << " B");
  CHECK(end.cuda_malloc_calls == mallocs_after_first_cycle);
  CHECK(end.bytes_in_use == start.bytes_in_use);
  CHECK(end.allocations - start.allocations == 50 * 3);
  CHECK(end.deallocations - start.deallocations == 50 * 3);
  CHECK(end.bytes_reserved >= end.bytes_in_use);
  CHECK(end.peak_bytes_in_use >= static_cast<std::size_t>(360) * kFeatures * sizeof(float));

  // With w still in use, its reservation chunk stays (a chunk holding a live block cannot be
  // returned); with every block of this test freed, the whole cache goes back.
  cu::release_cached();
  const cu::PoolStats kept = cu::pool_stats();
  CHECK(kept.bytes_reserved <= end.bytes_reserved);
  CHECK(kept.bytes_in_use == end.bytes_in_use);
  CHECK(kept.bytes_cached < end.bytes_reserved);
  w.reset();
  cu::release_cached();
  const cu::PoolStats released = cu::pool_stats();
  MESSAGE("after release_cached: " << released.bytes_reserved << " B reserved, "
                                   << released.bytes_in_use << " B in use, "
                                   << released.bytes_cached << " B cached");
  CHECK(released.bytes_in_use == start.bytes_in_use - ones.size() * sizeof(float));
  if (released.bytes_in_use == 0) {
    CHECK(released.bytes_cached == 0);
    CHECK(released.bytes_reserved == 0);
  }
}

TEST_CASE("pool: raw allocate/deallocate, misuse and out-of-memory" *
          doctest::skip(!gpu_present()) * doctest::test_suite("cuda-errors")) {
  SKIP_WITHOUT_GPU();
  const cu::PoolStats before = cu::pool_stats();
  void* p = cu::allocate(1000);
  REQUIRE(p != nullptr);
  CHECK(cu::pool_stats().bytes_in_use == before.bytes_in_use + 1000);
  CHECK_THROWS_AS(cu::deallocate(p, 5000), siam::value_error);         // wrong size
  CHECK(cu::pool_stats().bytes_in_use == before.bytes_in_use + 1000);  // still owned
  int not_ours = 0;
  CHECK_THROWS_AS(cu::deallocate(&not_ours, 4), siam::value_error);
  cu::deallocate(p, 1000);
  CHECK(cu::pool_stats().bytes_in_use == before.bytes_in_use);
  CHECK(cu::allocate(0) == nullptr);

  const std::size_t huge = std::size_t{1} << 50;  // 1 PiB: no device has it
  const std::size_t retries = cu::pool_stats().oom_retries;
  try {
    (void)cu::allocate(huge);
    FAIL("expected siam::cuda_out_of_memory");
  } catch (const siam::cuda_out_of_memory& e) {
    MESSAGE(std::string(e.what()));
    CHECK(contains(e.what(), std::to_string(huge) + " bytes"));
    CHECK(contains(e.what(), "out of memory"));
    CHECK(contains(e.what(), std::to_string(e.free_bytes) + " bytes free"));
    CHECK(e.requested_bytes == huge);
    CHECK(e.free_bytes <= e.total_bytes);
    CHECK(e.total_bytes > 0);
    CHECK(e.device == cu::current_device());
  }
  CHECK(cu::pool_stats().oom_retries == retries + 1);
  CHECK(cudaGetLastError() == cudaSuccess);  // the failure did not leak into later checks
  cu::DeviceBuffer<float> still_works(256);
  CHECK(still_works.data() != nullptr);
}

TEST_CASE("gemm float (pedantic FP32): all transposes, odd sizes, padded leading dimensions" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (const Shape& s : kShapes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      CAPTURE(s.m);
      CAPTURE(s.n);
      CAPTURE(s.k);
      CAPTURE(ta);
      CAPTURE(tb);
      CHECK(gemm_error<float>(ta, tb, s.m, s.n, s.k, rng) < 1e-5);
    }
}

TEST_CASE("gemm double: all transposes, odd sizes, padded leading dimensions" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (const Shape& s : kShapes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      CAPTURE(s.m);
      CAPTURE(s.n);
      CAPTURE(s.k);
      CAPTURE(ta);
      CAPTURE(tb);
      CHECK(gemm_error<double>(ta, tb, s.m, s.n, s.k, rng) < 1e-12);
    }
}

TEST_CASE("gemm with k == 0 sets C = beta * C; with m or n == 0 it touches nothing" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  const int m = 3, n = 4, ldc = 6;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> c(static_cast<std::size_t>(m) * ldc);
  for (std::size_t i = 0; i < c.size(); ++i)
    c[i] = static_cast<float>(i) + 1.0f;
  c[1] = nan;  // beta == 0 must not read C
  cu::DeviceBuffer<float> dc(c.size());
  std::vector<float> got(c.size());

  SUBCASE("beta = 0 writes zeros") {
    cu::copy_to_device(dc.data(), c.data(), c.size());
    cu::gemm<float>(false, false, m, n, 0, 2.0f, nullptr, 1, nullptr, n, 0.0f, dc.data(), ldc);
    cu::copy_to_host(got.data(), dc.data(), got.size());
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < ldc; ++j) {
        const std::size_t idx = static_cast<std::size_t>(i) * ldc + j;
        if (j < n)
          CHECK(got[idx] == 0.0f);
        else
          CHECK(got[idx] == c[idx]);  // padding untouched
      }
  }
  SUBCASE("beta = 0.5 scales, padded and contiguous rows") {
    c[1] = 2.0f;
    for (int ld : {ldc, n}) {
      cu::copy_to_device(dc.data(), c.data(), c.size());
      cu::gemm<float>(true, true, m, n, 0, 2.0f, nullptr, m, nullptr, 1, 0.5f, dc.data(), ld);
      cu::copy_to_host(got.data(), dc.data(), got.size());
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < ld; ++j) {
          const std::size_t idx = static_cast<std::size_t>(i) * ld + j;
          CHECK(got[idx] == (j < n ? 0.5f * c[idx] : c[idx]));
        }
    }
  }
  SUBCASE("m == 0 and n == 0 are no-ops") {
    cu::copy_to_device(dc.data(), c.data(), c.size());
    cu::gemm<float>(false, false, 0, n, 5, 1.0f, dc.data(), 5, dc.data(), n, 0.0f, dc.data(), n);
    cu::gemm<float>(false, false, m, 0, 5, 1.0f, dc.data(), 5, dc.data(), 1, 0.0f, dc.data(), 1);
    cu::copy_to_host(got.data(), dc.data(), got.size());
    CHECK(std::isnan(got[1]));
    got[1] = c[1] = 0.0f;
    CHECK(got == c);
  }
}

TEST_CASE("TF32 is opt-in: default FP32 error stays < 1e-5, TF32 error < 5e-3" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  // k = 256 makes TF32's 10-bit inputs visible (errors near 1e-4), so the first check would fail
  // if the default path silently used TF32.
  std::mt19937 rng(3);
  const double fp32 = gemm_error<float>(false, true, 256, 256, 256, rng);
  double tf32 = 0.0;
  {
    Tf32Scope scope(true);
    CHECK(cu::tf32_enabled());
    cublasMath_t mode{};
    REQUIRE(cublasGetMathMode(cu::cublas_handle(), &mode) == CUBLAS_STATUS_SUCCESS);
    CHECK(mode == CUBLAS_TF32_TENSOR_OP_MATH);
    tf32 = gemm_error<float>(false, true, 256, 256, 256, rng);
    // A call's own precision overrides the context's for that call alone.
    CHECK(gemm_error<float>(false, true, 256, 256, 256, rng, siam::MatmulPrecision::highest) <
          1e-5);
    CHECK(cu::tf32_enabled());
  }
  CHECK_FALSE(cu::tf32_enabled());
  MESSAGE("relative Frobenius error: pedantic FP32 " << fp32 << ", TF32 " << tf32);
  CHECK(fp32 < 1e-5);
  CHECK(tf32 < 5e-3);
  // Double ignores the switch.
  Tf32Scope scope(true);
  CHECK(gemm_error<double>(true, false, 37, 53, 19, rng) < 1e-12);
}

TEST_CASE("events order and time work on the context stream" * doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  cu::Event start(true), stop(true);
  cu::DeviceBuffer<float> a(512 * 512), c(512 * 512);
  std::vector<float> ones(a.size(), 1.0f);
  cu::copy_to_device(a.data(), ones.data(), ones.size());
  start.record(cu::stream());
  cu::gemm<float>(false, false, 512, 512, 512, 1.0f, a.data(), 512, a.data(), 512, 0.0f, c.data(),
                  512);
  stop.record(cu::stream());
  stop.synchronize();
  CHECK(stop.elapsed_ms(start) >= 0.0f);
  CHECK(cudaEventQuery(stop.get()) == cudaSuccess);
}

// ------------------------------------------------------------------------------------------------
// Stream-ordered reuse, staging, threads, debug mode (need a device)

namespace {

__global__ void fill_kernel(float* p, std::size_t n, float v) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

// Waits about `spin` clocks, then copies: keeps `in` busy on its stream long after the host has
// moved on, which is what makes an unordered reuse of `in` visible.
__global__ void slow_copy(float* out, const float* in, std::size_t n, long long spin) {
  const long long t0 = clock64();
  while (clock64() - t0 < spin) {
  }
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = in[i];
}

__global__ void planted_fault(float* p) {
  p[threadIdx.x] = 1.0f;  // p is not device memory: an illegal address
}

__global__ void tiny_kernel() {}

void fill(float* p, std::size_t n, float v, cudaStream_t s) {
  fill_kernel<<<256, 256, 0, s>>>(p, n, v);
  cu::check_launch("fill_kernel", s);
}

struct SideStream {
  siam::detail::UniqueStream s;
  SideStream() {
    cudaStream_t h = nullptr;
    SIAM_CUDA_CHECK(cudaStreamCreateWithFlags(&h, cudaStreamNonBlocking));
    s.reset(h);
  }
  cudaStream_t get() const { return s.get(); }
};

// The child half of the planted-fault test (main() runs it for --planted-fault): with the debug
// mode on, the fault must surface at check_launch as a cuda_error naming the kernel.
int planted_fault_child() {
  if (!cu::sync_check_enabled()) return 3;
  const cudaStream_t s = cu::stream();
  planted_fault<<<1, 32, 0, s>>>(reinterpret_cast<float*>(std::uintptr_t{16}));
  try {
    cu::check_launch("planted_fault kernel", s);
  } catch (const siam::cuda_error& e) {
    std::cout << "caught: " << e.what() << "\n";
    return contains(e.what(), "planted_fault kernel") && contains(e.what(), "SIAM_CUDA_SYNC_CHECK")
               ? 0
               : 1;
  }
  return 2;
}

}  // namespace

TEST_CASE("a rejected launch becomes a cuda_error naming the kernel" *
          doctest::skip(!gpu_present()) * doctest::test_suite("cuda-errors")) {
  SKIP_WITHOUT_GPU();
  const std::uint64_t before = cu::launch_count();
  tiny_kernel<<<1, 4096, 0, cu::stream()>>>();  // 4096 threads per block: rejected
  try {
    cu::check_launch("tiny_kernel", cu::stream());
    FAIL("expected siam::cuda_error");
  } catch (const siam::cuda_error& e) {
    // The error's name depends on the CUDA version (InvalidConfiguration up to 12,
    // InvalidValue on 13): require the kernel's name and that a CUDA error is named.
    CHECK(contains(e.what(), "launch of tiny_kernel failed"));
    CHECK(contains(e.what(), "cudaError"));
  }
  CHECK(cu::launch_count() == before + 1);
  tiny_kernel<<<1, 32, 0, cu::stream()>>>();
  CHECK_NOTHROW(cu::check_launch("tiny_kernel", cu::stream()));
  cu::synchronize();
}

TEST_CASE("debug mode: a planted kernel fault becomes a typed exception naming the kernel" *
          doctest::skip(!gpu_present()) * doctest::test_suite("cuda-errors")) {
  SKIP_WITHOUT_GPU();
  // A fault poisons the CUDA context of its process, so it is planted in a child process.
  // Everything the child needs is prepared before fork(): it only calls execve.
  std::vector<std::string> env_strings = {"SIAM_CUDA_SYNC_CHECK=1"};
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "SIAM_CUDA_SYNC_CHECK=", 21) != 0) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_strings)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  char name[] = "test_cuda_runtime";
  char flag[] = "--planted-fault";
  char* argv[] = {name, flag, nullptr};
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execve("/proc/self/exe", argv, envp.data());
    _exit(4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  // 0: caught and named; 1: caught but unnamed; 2: not caught; 3: mode off; 4: exec failed.
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("two streams reusing freed blocks under load: record_stream orders the reuse" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  SideStream side;
  const cudaStream_t main_stream = cu::stream();
  std::mt19937 rng(5);
  std::uniform_int_distribution<std::size_t> size(1, std::size_t{1} << 18);
  const cu::PoolStats before = cu::pool_stats();
  constexpr int kIterations = 200;
  std::vector<cu::DeviceBuffer<float>> outs;
  std::vector<float> expect;
  for (int it = 0; it < kIterations; ++it) {
    const std::size_t n = size(rng);
    const float value = static_cast<float>(it + 1);
    // Both blocks are allocated, and src filled, before the event the side stream waits for:
    // stream-ordered memory is usable on another stream only behind its allocation.
    auto* src = static_cast<float*>(cu::allocate(n * sizeof(float)));
    outs.emplace_back(n);
    expect.push_back(value);
    fill(src, n, value, main_stream);
    cu::Event ready;
    ready.record(main_stream);
    ready.wait(side.get());
    slow_copy<<<64, 256, 0, side.get()>>>(outs.back().data(), src, n, 20000);
    cu::check_launch("slow_copy", side.get());
    cu::record_stream(src, side.get());
    cu::record_stream(outs.back().data(), side.get());
    cu::deallocate(src, n * sizeof(float));  // the side stream may still be reading it
    // Reuse at once, on the main stream, with garbage.
    for (int j = 0; j < 3; ++j) {
      const std::size_t m = size(rng);
      cu::DeviceBuffer<float> scratch(m);
      fill(scratch.data(), m, -1.0f, main_stream);
    }
  }
  SIAM_CUDA_CHECK(cudaStreamSynchronize(side.get()));
  cu::synchronize();
  bool all_right = true;
  for (std::size_t i = 0; i < outs.size(); ++i) {
    std::vector<float> got(outs[i].size());
    cu::copy_to_host(got.data(), outs[i].data(), got.size());
    for (float v : got)
      all_right = all_right && v == expect[i];
  }
  CHECK(all_right);
  outs.clear();
  const cu::PoolStats after = cu::pool_stats();
  CHECK(after.cross_stream_frees - before.cross_stream_frees == 2 * kIterations);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK_THROWS_AS(cu::record_stream(reinterpret_cast<void*>(std::uintptr_t{64}), side.get()),
                  siam::value_error);
}

TEST_CASE("upload: the source may be overwritten at once; the ring wraps and stays bounded" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  constexpr std::size_t n = 75000;  // 300 KB: 14 of them fill the 4 MiB ring
  constexpr int kCopies = 40;
  std::vector<cu::DeviceBuffer<float>> dst;
  for (int i = 0; i < kCopies; ++i) {
    std::vector<float> src(n, static_cast<float>(i));
    dst.emplace_back(n);
    cu::upload(dst.back().data(), src.data(), n);
    std::fill(src.begin(), src.end(), -7.0f);  // reused at once: must not reach the device
    CHECK(cu::context().staging().in_flight() <= siam::detail::StagingRing::max_in_flight);
  }
  // One copy larger than the ring goes through in pieces.
  std::vector<float> big(3'000'000);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<float>(i % 1000);
  cu::DeviceBuffer<float> dbig(big.size());
  cu::upload(dbig.data(), big.data(), big.size());
  const std::vector<float> want_big = big;
  std::fill(big.begin(), big.end(), 0.0f);
  bool all_right = true;
  for (int i = 0; i < kCopies; ++i) {
    std::vector<float> got(n);
    cu::copy_to_host(got.data(), dst[static_cast<std::size_t>(i)].data(), n);
    for (float v : got)
      all_right = all_right && v == static_cast<float>(i);
  }
  std::vector<float> got_big(want_big.size());
  cu::copy_to_host(got_big.data(), dbig.data(), got_big.size());
  CHECK(all_right);
  CHECK(got_big == want_big);
}

TEST_CASE("copies from pinned memory: asynchronous, guarded by an event" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  constexpr std::size_t n = 1 << 20;
  cu::PinnedBuffer<float> pinned(n);
  for (std::size_t i = 0; i < n; ++i)
    pinned[i] = static_cast<float>(i % 4096) - 2048.0f;
  std::vector<float> want(pinned.data(), pinned.data() + n);
  cu::DeviceBuffer<float> d(n), e(n);
  cu::copy_to_device_async(d.data(), pinned.data(), n);
  cu::Event copied;
  copied.record(cu::stream());
  copied.synchronize();  // the contract: only now may the pinned source change
  // Through the staging ring a pinned source may change at once.
  cu::upload(e.data(), pinned.data(), n);
  for (std::size_t i = 0; i < n; ++i)
    pinned[i] = 0.0f;
  std::vector<float> got(n);
  cu::copy_to_host(got.data(), d.data(), n);
  CHECK(got == want);
  cu::copy_to_host(got.data(), e.data(), n);
  CHECK(got == want);
  // Device -> pinned host.
  cu::copy_to_host(pinned.data(), d.data(), n);
  CHECK(std::equal(want.begin(), want.end(), pinned.data()));
  std::vector<float> pageable(16, 1.0f);
  CHECK_THROWS_AS(cu::copy_to_device_async(d.data(), pageable.data(), pageable.size()),
                  siam::value_error);
}

TEST_CASE("several host threads share the context: pool, uploads, GEMM, launch counter" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  const cu::PoolStats before = cu::pool_stats();
  const std::uint64_t launches = cu::launch_count();
  constexpr int kThreads = 8, kIterations = 40, kLaunchesPerIteration = 2;
  std::atomic<int> wrong{0}, failed{0};
  const int device = cu::current_device();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        SIAM_CUDA_CHECK(cudaSetDevice(device));
        std::mt19937 rng(static_cast<unsigned>(t));
        for (int it = 0; it < kIterations; ++it) {
          const int m = 16 + static_cast<int>(rng() % 200), k = 64, n = 24;
          std::vector<float> a(static_cast<std::size_t>(m) * k, static_cast<float>(t + 1));
          std::vector<float> b(static_cast<std::size_t>(k) * n, 0.5f);
          cu::DeviceBuffer<float> da(a.size()), db(b.size()), dc(static_cast<std::size_t>(m) * n);
          cu::upload(da.data(), a.data(), a.size());
          cu::upload(db.data(), b.data(), b.size());
          cu::gemm<float>(false, false, m, n, k, 1.0f, da.data(), k, db.data(), n, 0.0f, dc.data(),
                          n);
          cu::launch_counter().fetch_add(1);
          fill_kernel<<<1, 32, 0, cu::stream()>>>(da.data(), 1, 0.0f);
          cu::check_launch("fill_kernel", cu::stream());
          std::vector<float> c(dc.size());
          cu::copy_to_host(c.data(), dc.data(), c.size());
          for (float v : c)
            if (v != 32.0f * static_cast<float>(t + 1)) ++wrong;
        }
      } catch (const std::exception& e) {
        std::cerr << "thread " << t << ": " << e.what() << "\n";
        ++failed;
      }
    });
  for (auto& th : threads)
    th.join();
  CHECK(failed.load() == 0);
  CHECK(wrong.load() == 0);
  CHECK(cu::launch_count() - launches ==
        static_cast<std::uint64_t>(kThreads * kIterations * kLaunchesPerIteration));
  const cu::PoolStats after = cu::pool_stats();
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(after.allocations - before.allocations ==
        static_cast<std::size_t>(kThreads * kIterations * 3));
}

TEST_CASE("device-aware free: a block goes back to its own device's pool" *
          doctest::skip(!gpu_present())) {
  SKIP_WITHOUT_GPU();
  int here = cu::current_device();
  CHECK_THROWS_AS(cu::deallocate(&here, sizeof here), siam::value_error);
  if (cu::device_count() < 2) {
    MESSAGE("one CUDA device: the cross-device part needs two, not run");
    return;
  }
  const int other = here == 0 ? 1 : 0;
  SIAM_CUDA_CHECK(cudaSetDevice(other));
  void* p = cu::allocate(4096);
  const std::size_t in_use = cu::context(other).pool().stats().bytes_in_use;
  SIAM_CUDA_CHECK(cudaSetDevice(here));
  cu::deallocate(p, 4096);  // the current device is not the owner
  CHECK(cu::context(other).pool().stats().bytes_in_use == in_use - 4096);
  CHECK(cu::current_device() == here);
}

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--planted-fault") == 0) return planted_fault_child();
  doctest::Context runner(argc, argv);
  const int rc = runner.run();
  if (runner.shouldExit() || rc != 0) return rc;
  if (!gpu_present()) {
    std::cout << "no CUDA device: GPU tests skipped\n";
    return 77;
  }
  return 0;
}

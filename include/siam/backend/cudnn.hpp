// The CUDA backend's convolution engine: conv2d through cuDNN 9 (legacy convolution API),
// max_pool2d through siam's own kernels (cuDNN's pooling keeps no arg-max and does not
// promise first-index ties, which the op's gradient contract needs). nvcc only; link
// cuDNN (CMake target siam::cudnn). Never included by <siam/siamese.hpp>.
//
// Handles and descriptors are RAII objects, created once per device (handle, bound to the
// backend's stream) and per geometry (descriptors and the algorithms cuDNN's heuristics
// pick), then reused. The workspace is the op's tape slot, i.e. memory from the backend's
// pool: after the first step nothing is cudaMalloc'd. In the highest matmul precision (the
// default) math is plain FP32/FP64: every descriptor is CUDNN_FMA_MATH and only algorithms of
// that math type are chosen (no TF32 tensor cores), so the CPU/GPU parity tolerances hold; in
// high and medium the heuristics may pick tensor-core algorithms. Deterministic algorithms are
// preferred.
#pragma once

#include <cudnn.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "siam/backend/conv_dispatch.hpp"
#include "siam/backend/cuda.hpp"

/// Evaluates a cuDNN call once; throws siam::cuda_error naming the call, the status and the
/// source position unless it returned CUDNN_STATUS_SUCCESS.
#define SIAM_CUDNN_CHECK(call) ::siam::cuda::throw_on_cudnn_error((call), #call, __FILE__, __LINE__)

namespace siam::cuda {

inline void throw_on_cudnn_error(cudnnStatus_t status, const char* call, const char* file,
                                 int line) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  throw cuda_error(std::string(call) + " failed: " + cudnnGetErrorString(status) + " at " + file +
                   ":" + std::to_string(line));
}

namespace detail {
template <class H, cudnnStatus_t (*Destroy)(H)>
struct CudnnDeleter {
  void operator()(H h) const noexcept { Destroy(h); }
};
using UniqueCudnn = std::unique_ptr<cudnnContext, CudnnDeleter<cudnnHandle_t, cudnnDestroy>>;
using UniqueTensorDesc =
    std::unique_ptr<cudnnTensorStruct,
                    CudnnDeleter<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>>;
using UniqueFilterDesc =
    std::unique_ptr<cudnnFilterStruct,
                    CudnnDeleter<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>>;
using UniqueConvDesc =
    std::unique_ptr<cudnnConvolutionStruct,
                    CudnnDeleter<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>>;
}  // namespace detail

/// The cuDNN handle of the current device, bound to stream(). Created on first use and, like
/// the device context, kept until the process ends.
inline cudnnHandle_t cudnn_handle() {
  static auto* const handles = new std::unordered_map<int, detail::UniqueCudnn>;
  static std::mutex mutex;
  const int dev = current_device();
  std::lock_guard lock(mutex);
  auto& h = (*handles)[dev];
  if (!h) {
    cudnnHandle_t raw = nullptr;
    SIAM_CUDNN_CHECK(cudnnCreate(&raw));
    h.reset(raw);
    SIAM_CUDNN_CHECK(cudnnSetStream(raw, stream()));
  }
  return h.get();
}

}  // namespace siam::cuda

namespace siam::detail {

namespace pool_kernels {
// One thread per output: the window's maximum and its position (window_max, as on the host).
template <class T>
__global__ void forward(ConvGeometry g, const T* x, T* y, T* idx) {
  const index_t total = g.n * g.c * g.oh * g.ow;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t pl = i / (g.oh * g.ow), q = i % (g.oh * g.ow);
    index_t best;
    y[i] = window_max(g, x + pl * g.h * g.w, (q / g.ow) * g.stride, (q % g.ow) * g.stride, best);
    idx[i] = static_cast<T>(best);
  }
}
// One thread per input: the sum of dy over the windows whose arg-max it is (a gather, so
// no atomics and a fixed order).
template <class T>
__global__ void backward(ConvGeometry g, const T* dy, const T* idx, T* dx, bool acc) {
  const index_t total = g.n * g.c * g.h * g.w;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t pl = i / (g.h * g.w), at = i % (g.h * g.w);
    const index_t iy = at / g.w, ix = at % g.w;
    const index_t oy0 = iy < g.kh ? 0 : (iy - g.kh) / g.stride + 1,
                  ox0 = ix < g.kw ? 0 : (ix - g.kw) / g.stride + 1;
    const index_t oy1 = iy / g.stride < g.oh - 1 ? iy / g.stride : g.oh - 1,
                  ox1 = ix / g.stride < g.ow - 1 ? ix / g.stride : g.ow - 1;
    T s = 0;
    for (index_t oy = oy0; oy <= oy1; ++oy)
      for (index_t ox = ox0; ox <= ox1; ++ox) {
        const index_t o = pl * g.oh * g.ow + oy * g.ow + ox;
        if (static_cast<index_t>(idx[o]) == at) s += dy[o];
      }
    dx[i] = acc ? dx[i] + s : s;
  }
}
}  // namespace pool_kernels

template <class T>
struct DeviceConv<T, Cuda> {
  static constexpr bool available = true;
  static constexpr cudnnDataType_t dtype =
      std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;

  struct Entry {
    int device;
    ConvGeometry g;
    MatmulPrecision mode;  // the matmul precision the algorithms were chosen for
    cuda::detail::UniqueTensorDesc x, y, b;
    cuda::detail::UniqueFilterDesc w;
    // One descriptor per direction: each carries the math type of its chosen algorithm.
    cuda::detail::UniqueConvDesc conv, conv_bwd_data, conv_bwd_filter;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    std::size_t bytes = 0;
  };

  static cuda::detail::UniqueTensorDesc tensor(int n, int c, int h, int w) {
    cudnnTensorDescriptor_t d = nullptr;
    SIAM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    cuda::detail::UniqueTensorDesc u(d);
    SIAM_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, dtype, n, c, h, w));
    return u;
  }
  // Whether an algorithm's math type is allowed in `mode`: in highest (and always for double)
  // FMA math (plain FP32/FP64), or an algorithm cuDNN lists under CUDNN_DEFAULT_MATH, which then
  // runs with the descriptor set to CUDNN_FMA_MATH (the default math type itself would let FP32
  // convolutions use TF32 on Ampere and later); never CUDNN_TENSOR_OP_MATH or
  // _ALLOW_CONVERSION. high and medium may use tensor cores, but never _ALLOW_CONVERSION (FP16).
  static bool plain_only(MatmulPrecision mode) {
    return !std::is_same_v<T, float> || mode == MatmulPrecision::highest;
  }
  static bool math_allowed(cudnnMathType_t math, MatmulPrecision mode) {
    if (plain_only(mode)) return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH;
    return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;  // FP16 down-conversion: never
  }

  // The first algorithm cuDNN's heuristics rank whose math type `mode` allows, deterministic
  // ones first (then results are the same run to run) and, in highest, ones listed under FMA
  // math before those listed under the default math type. The math type it runs with is set
  // on `cd` (always CUDNN_FMA_MATH in highest).
  template <class Algo, class Perf, class F>
  static Algo pick(const char* what, cudnnConvolutionDescriptor_t cd, MatmulPrecision mode,
                   F query) {
    Perf perf[32];
    int found = 0;
    SIAM_CUDNN_CHECK(query(perf, 32, &found));
    for (const bool need_deterministic : {true, false})
      for (const bool need_fma : {true, false})
        for (int i = 0; i < found; ++i) {
          const Perf& p = perf[i];
          if (p.status != CUDNN_STATUS_SUCCESS || !math_allowed(p.mathType, mode)) continue;
          if (need_deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
          if (need_fma && plain_only(mode) && p.mathType != CUDNN_FMA_MATH) continue;
          SIAM_CUDNN_CHECK(
              cudnnSetConvolutionMathType(cd, plain_only(mode) ? CUDNN_FMA_MATH : p.mathType));
          return p.algo;
        }
    throw cuda_error(std::string("cuDNN: no ") + what + " algorithm for this convolution in " +
                     (plain_only(mode) ? "FMA (plain FP32/FP64) math" : "any math type"));
  }

  // Per device and geometry, created on first use. One thread drives a device's stream.
  static Entry& entry(const ConvGeometry& g) {
    static auto* const cache = new std::vector<std::unique_ptr<Entry>>;
    static std::mutex mutex;
    const int dev = cuda::current_device();
    const MatmulPrecision mode =
        std::is_same_v<T, float> ? cuda::matmul_precision() : MatmulPrecision::highest;
    std::lock_guard lock(mutex);
    for (auto& e : *cache)
      if (e->device == dev && e->g == g && e->mode == mode) return *e;
    auto e = std::make_unique<Entry>();
    e->device = dev;
    e->g = g;
    e->mode = mode;
    auto i = [](index_t v) { return static_cast<int>(v); };
    e->x = tensor(i(g.n), i(g.c), i(g.h), i(g.w));
    e->y = tensor(i(g.n), i(g.o), i(g.oh), i(g.ow));
    e->b = tensor(1, i(g.o), 1, 1);
    cudnnFilterDescriptor_t fd = nullptr;
    SIAM_CUDNN_CHECK(cudnnCreateFilterDescriptor(&fd));
    e->w.reset(fd);
    SIAM_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(fd, dtype, CUDNN_TENSOR_NCHW, i(g.o), i(g.c), i(g.kh), i(g.kw)));
    const auto make_conv = [&](cuda::detail::UniqueConvDesc& slot) {
      cudnnConvolutionDescriptor_t cd = nullptr;
      SIAM_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
      slot.reset(cd);
      SIAM_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
          cd, i(g.pad), i(g.pad), i(g.stride), i(g.stride), 1, 1, CUDNN_CROSS_CORRELATION, dtype));
      // Asked with FMA math in highest, so the heuristics rank plain FP32 algorithms; with the
      // default math type (tensor cores allowed) otherwise. pick() sets the chosen one's.
      SIAM_CUDNN_CHECK(
          cudnnSetConvolutionMathType(cd, plain_only(mode) ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
      return cd;
    };
    cudnnConvolutionDescriptor_t cf = make_conv(e->conv), cbd = make_conv(e->conv_bwd_data),
                                 cbf = make_conv(e->conv_bwd_filter);
    cudnnHandle_t h = cuda::cudnn_handle();
    e->fwd = pick<cudnnConvolutionFwdAlgo_t, cudnnConvolutionFwdAlgoPerf_t>(
        "forward", cf, mode, [&](auto* p, int n, int* f) {
          return cudnnGetConvolutionForwardAlgorithm_v7(h, e->x.get(), fd, cf, e->y.get(), n, f, p);
        });
    e->bwd_data = pick<cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdDataAlgoPerf_t>(
        "backward-data", cbd, mode, [&](auto* p, int n, int* f) {
          return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, fd, e->y.get(), cbd, e->x.get(), n,
                                                             f, p);
        });
    e->bwd_filter = pick<cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionBwdFilterAlgoPerf_t>(
        "backward-filter", cbf, mode, [&](auto* p, int n, int* f) {
          return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, e->x.get(), e->y.get(), cbf, fd,
                                                               n, f, p);
        });
    std::size_t a = 0, b = 0, c = 0;
    SIAM_CUDNN_CHECK(
        cudnnGetConvolutionForwardWorkspaceSize(h, e->x.get(), fd, cf, e->y.get(), e->fwd, &a));
    SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, fd, e->y.get(), cbd,
                                                                  e->x.get(), e->bwd_data, &b));
    SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, e->x.get(), e->y.get(), cbf,
                                                                    fd, e->bwd_filter, &c));
    e->bytes = std::max({a, b, c});
    cache->push_back(std::move(e));
    return *cache->back();
  }

  static index_t workspace(const ConvGeometry& g) {
    if (g.n == 0) return 0;
    return static_cast<index_t>((entry(g).bytes + sizeof(T) - 1) / sizeof(T));
  }

  static void forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y, T* work) {
    if (g.n == 0) return;
    Entry& e = entry(g);
    cudnnHandle_t h = cuda::cudnn_handle();
    const T one = 1, zero = 0;
    SIAM_CUDNN_CHECK(cudnnConvolutionForward(h, &one, e.x.get(), x, e.w.get(), w, e.conv.get(),
                                             e.fwd, work, e.bytes, &zero, e.y.get(), y));
    if (b) SIAM_CUDNN_CHECK(cudnnAddTensor(h, &one, e.b.get(), b, &one, e.y.get(), y));
    cuda::launch_counter().fetch_add(b ? 2 : 1, std::memory_order_relaxed);
  }

  static void backward(const ConvGeometry& g, const T* x, const T* w, const T* dy, T* dx,
                       bool acc_dx, T* dw, bool acc_dw, T* db, bool acc_db, T* work) {
    if (g.n == 0) {  // no images: zero weight and bias gradients
      if (dw && !acc_dw)
        SIAM_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(T) * g.weight_size(), cuda::stream()));
      if (db && !acc_db) SIAM_CUDA_CHECK(cudaMemsetAsync(db, 0, sizeof(T) * g.o, cuda::stream()));
      return;
    }
    Entry& e = entry(g);
    cudnnHandle_t h = cuda::cudnn_handle();
    const T one = 1, zero = 0;
    if (db)
      SIAM_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, &one, e.y.get(), dy, acc_db ? &one : &zero,
                                                    e.b.get(), db));
    if (dw)
      SIAM_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
          h, &one, e.x.get(), x, e.y.get(), dy, e.conv_bwd_filter.get(), e.bwd_filter, work,
          e.bytes, acc_dw ? &one : &zero, e.w.get(), dw));
    if (dx)
      SIAM_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, e.w.get(), w, e.y.get(), dy,
                                                    e.conv_bwd_data.get(), e.bwd_data, work,
                                                    e.bytes, acc_dx ? &one : &zero, e.x.get(), dx));
    cuda::launch_counter().fetch_add((db ? 1u : 0u) + (dw ? 1u : 0u) + (dx ? 1u : 0u),
                                     std::memory_order_relaxed);
  }

  static void pool_forward(const ConvGeometry& g, const T* x, T* y, T* idx) {
    const index_t n = g.out_size();
    if (n == 0) return;
    const cudaStream_t st = cuda::stream();
    pool_kernels::forward<T><<<kernels::grid_for(n), kernels::block, 0, st>>>(g, x, y, idx);
    kernels::check_launch("max_pool2d forward kernel", st);
  }
  static void pool_backward(const ConvGeometry& g, const T* dy, const T* idx, T* dx, bool acc) {
    const index_t n = g.in_size();
    if (n == 0) return;
    const cudaStream_t st = cuda::stream();
    pool_kernels::backward<T><<<kernels::grid_for(n), kernels::block, 0, st>>>(g, dy, idx, dx, acc);
    kernels::check_launch("max_pool2d backward kernel", st);
  }
};

}  // namespace siam::detail

// The CUDA backend: the same interface as siam::Cpu, on one stream of the current
// device. Memory comes from the caching pool of cuda_runtime.hpp; GEMM goes to cuBLAS
// (FP32 without TF32 unless cuda::set_tf32(true)); every elementwise expression runs
// as ONE kernel whose functor is the expression's kernel tree; reductions are
// two-level tree reductions (shared memory, then a second pass), never atomics, so
// results are deterministic run to run.
//
// This header must be compiled by nvcc: a translation unit that uses Tensor<T, Cuda>
// is a .cu file (see docs/backends.md).
#pragma once

#if !defined(__CUDACC__)
#error "siam/backend/cuda.hpp needs nvcc: compile this translation unit as CUDA (.cu)"
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <math_constants.h>

#include "siam/backend/cuda_runtime.hpp"
#include "siam/detail/config.hpp"
#include "siam/shape.hpp"

namespace siam {

namespace detail::kernels {

constexpr int block = 256;

template <class T, class K>
__global__ void assign(T* dst, index_t rows, index_t cols, K k) {
  const index_t n = rows * cols;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = rows == 1 ? 0 : i / cols;
    dst[i] = k(r, i - r * cols);
  }
}

template <class T, class... Pairs>
__global__ void assign_fused(index_t n, Pairs... p) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x)
    ((p.first[i] = p.second(0, i)), ...);
}

// Up to 8 fused groups in one launch: blockIdx.y picks the group.
template <class G>
struct GroupArray {
  static constexpr int capacity = 8;
  G g[capacity];
};
template <class G>
__global__ void assign_fused_batch(GroupArray<G> a) {
  const G& g = a.g[blockIdx.y];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < g.n;
       i += index_t(gridDim.x) * blockDim.x)
    g.pairs.run(i);
}

// Column totals. A block of 32 x 8 threads owns 32 columns; its 8 thread rows stride
// down the rows, then combine in shared memory. Optionally also stores the values.
template <class T, class K>
__global__ void sum_rows(T* out, T* dst, index_t rows, index_t cols, K k, bool accumulate) {
  __shared__ T part[8][33];
  const index_t c = blockIdx.x * index_t(32) + threadIdx.x;
  T acc = 0;
  if (c < cols)
    for (index_t r = threadIdx.y; r < rows; r += 8) {
      const T v = k(r, c);
      if (dst) dst[r * cols + c] = v;
      acc += v;
    }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    T total = 0;
    for (int y = 0; y < 8; ++y)
      total += part[y][threadIdx.x];
    out[c] = accumulate ? out[c] + total : total;
  }
}

// Block-wide sum of one value per thread (blockDim.x == block).
template <class T>
__device__ T block_sum(T v) {
  __shared__ T s[block];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = block / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

// Row totals: one block per row.
template <class T, class K>
__global__ void sum_cols(T* out, index_t rows, index_t cols, K k, bool accumulate) {
  const index_t r = blockIdx.x;
  if (r >= rows) return;
  T acc = 0;
  for (index_t c = threadIdx.x; c < cols; c += blockDim.x)
    acc += k(r, c);
  const T total = block_sum(acc);
  if (threadIdx.x == 0) out[r] = accumulate ? out[r] + total : total;
}

// Sum of all, first level: block b sums its strided share into partial[b] (with one
// block, partial is the output and `accumulate` applies).
template <class T, class K>
__global__ void sum_all_partial(T* partial, index_t rows, index_t cols, K k, bool accumulate) {
  const index_t n = rows * cols;
  T acc = 0;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = rows == 1 ? 0 : i / cols;
    acc += k(r, i - r * cols);
  }
  const T total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = accumulate ? partial[blockIdx.x] + total : total;
}
// Second level: one block adds the partials in a fixed order.
template <class T>
__global__ void sum_all_final(T* out, const T* partial, int nparts, bool accumulate) {
  T acc = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x)
    acc += partial[i];
  const T total = block_sum(acc);
  if (threadIdx.x == 0) out[0] = accumulate ? out[0] + total : total;
}

template <class T>
__global__ void gather_rows(T* dst, const T* src, const std::uint32_t* idx, index_t n,
                            index_t cols) {
  const index_t total = n * cols;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / cols;
    dst[i] = src[static_cast<index_t>(idx[r]) * cols + (i - r * cols)];
  }
}

// Per-row maxima: blocks stride over the rows, threads over a row's columns.
template <class T, class K>
__global__ void max_cols(T* out, index_t rows, index_t cols, K k) {
  __shared__ T s[block];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T m = sizeof(T) == 4 ? T(-CUDART_INF_F) : T(-CUDART_INF);
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const T v = k(r, c);
      m = v > m ? v : m;
    }
    s[threadIdx.x] = m;
    __syncthreads();
    for (int w = block / 2; w > 0; w /= 2) {
      if (threadIdx.x < w && s[threadIdx.x + w] > s[threadIdx.x]) s[threadIdx.x] = s[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = s[0];
    __syncthreads();
  }
}

// dst row dest[u] += the src rows order[starts[u] .. starts[u + 1]), added in that order
// (the host groups the indices by destination: deterministic, no atomics).
template <class T>
__global__ void scatter_add_rows(T* dst, const T* src, const std::uint32_t* plan, index_t n,
                                 index_t groups, index_t cols) {
  const std::uint32_t* order = plan;
  const std::uint32_t* dest = plan + n;
  const std::uint32_t* starts = plan + n + groups;
  const index_t total = groups * cols;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t u = i / cols, c = i - u * cols;
    T acc = dst[static_cast<index_t>(dest[u]) * cols + c];
    for (std::uint32_t j = starts[u]; j < starts[u + 1]; ++j)
      acc += src[static_cast<index_t>(order[j]) * cols + c];
    dst[static_cast<index_t>(dest[u]) * cols + c] = acc;
  }
}

// GEMM with a dimension of a few elements (the 2-wide output layer): cuBLAS spends
// 13-15 us on each of these 1.5-MFLOP products. Row-major C = alpha op(A) op(B) + beta C.
// Short dot products (k <= 32) get one thread per output; long ones one warp per output,
// lanes striding k, reduced by shuffles in a fixed order (deterministic).
template <class T>
__global__ void skinny_gemm(bool ta, bool tb, index_t m, index_t n, index_t k, T alpha, const T* A,
                            index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  const bool per_warp = k > 32;
  const index_t gid = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  const index_t out = per_warp ? gid / 32 : gid;
  const int lane = per_warp ? int(threadIdx.x % 32) : 0;
  if (out >= m * n) return;  // whole warps exit together: m * n is per warp here
  const index_t i = out / n, j = out - (out / n) * n;
  T acc = 0;
  for (index_t l = lane; l < k; l += per_warp ? 32 : 1) {
    const T a = ta ? A[l * lda + i] : A[i * lda + l];
    const T b = tb ? B[j * ldb + l] : B[l * ldb + j];
    acc += a * b;
  }
  if (per_warp)
    for (int off = 16; off > 0; off /= 2)
      acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) C[i * ldc + j] = beta == T(0) ? alpha * acc : alpha * acc + beta * C[i * ldc + j];
}

inline int grid_for(index_t n) {
  const index_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 4096 ? 4096 : blocks));
}

/// Kernel launches (and GEMM calls) issued so far by this process: the training step
/// on a GPU is launch-bound, so the benchmark reports launches per step.
inline std::uint64_t& launch_count() {
  static std::uint64_t n = 0;
  return n;
}

inline void check_launch(const char* what) {
  ++launch_count();
  cuda::throw_on_cuda_error(cudaGetLastError(), what, __FILE__, __LINE__);
}

}  // namespace detail::kernels

struct Cuda {
  static constexpr bool is_host = false;
  static constexpr const char* name = "cuda";

  template <class T>
  static T* allocate(index_t n) {
    return static_cast<T*>(cuda::allocate(static_cast<std::size_t>(n) * sizeof(T)));
  }
  template <class T>
  static void deallocate(T* p, index_t n) noexcept {
    if (!p) return;
    try {
      cuda::deallocate(p, static_cast<std::size_t>(n) * sizeof(T));
    } catch (...) {
      // A destructor must not throw; the pool only rejects pointers it never handed out.
    }
  }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) {
    cuda::copy_device(dst, src, static_cast<std::size_t>(n));
  }
  template <class T>
  static void to_host(T* host_dst, const T* src, index_t n) {
    cuda::copy_to_host(host_dst, src, static_cast<std::size_t>(n));
  }
  /// Queues a copy from ordinary (pageable) host memory. CUDA stages pageable memory
  /// before cudaMemcpyAsync returns, so `host_src` may be reused at once and the host
  /// does not wait for the device: the training step never synchronises here.
  template <class T>
  static void from_host(T* dst, const T* host_src, index_t n) {
    if (n == 0) return;
    SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, static_cast<std::size_t>(n) * sizeof(T),
                                    cudaMemcpyHostToDevice, cuda::stream()));
  }
  static void synchronize() { cuda::synchronize(); }

  template <class T, class K>
  static void assign(T* dst, index_t rows, index_t cols, const K& k) {
    const index_t n = rows * cols;
    if (n == 0) return;
    namespace dk = detail::kernels;
    dk::assign<<<dk::grid_for(n), dk::block, 0, cuda::stream()>>>(dst, rows, cols, k);
    dk::check_launch("assign kernel");
  }

  template <class T, class... Pairs>
  static void assign_fused(index_t n, const Pairs&... pairs) {
    if (n == 0) return;
    namespace dk = detail::kernels;
    dk::assign_fused<T><<<dk::grid_for(n), dk::block, 0, cuda::stream()>>>(n, pairs...);
    dk::check_launch("fused assign kernel");
  }

  template <class T, class G>
  static void assign_fused_batch(const G* groups, std::size_t count) {
    namespace dk = detail::kernels;
    constexpr std::size_t cap = dk::GroupArray<G>::capacity;
    for (std::size_t first = 0; first < count; first += cap) {
      dk::GroupArray<G> a{};
      const std::size_t k = std::min(cap, count - first);
      index_t longest = 0;
      for (std::size_t i = 0; i < k; ++i) {
        a.g[i] = groups[first + i];
        longest = std::max(longest, a.g[i].n);
      }
      if (longest == 0) continue;
      const dim3 grid(static_cast<unsigned>(dk::grid_for(longest)), static_cast<unsigned>(k));
      dk::assign_fused_batch<<<grid, dk::block, 0, cuda::stream()>>>(a);
      dk::check_launch("fused batch kernel");
    }
  }

  template <class T, class K>
  static void sum_rows(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    launch_sum_rows(out, static_cast<T*>(nullptr), rows, cols, k, accumulate);
  }
  template <class T, class K>
  static void assign_sum_rows(T* dst, T* out, index_t rows, index_t cols, const K& k,
                              bool accumulate) {
    launch_sum_rows(out, dst, rows, cols, k, accumulate);
  }

  template <class T, class K>
  static void sum_cols(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    if (rows == 0) return;
    namespace dk = detail::kernels;
    dk::sum_cols<<<static_cast<unsigned>(rows), dk::block, 0, cuda::stream()>>>(out, rows, cols, k,
                                                                                accumulate);
    dk::check_launch("sum_cols kernel");
  }

  template <class T, class K>
  static void sum_all(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    namespace dk = detail::kernels;
    const index_t n = rows * cols;
    if (n <= small_reduction) {  // one block, one launch: the loss, biases, small tensors
      dk::sum_all_partial<<<1, dk::block, 0, cuda::stream()>>>(out, rows, cols, k, accumulate);
      dk::check_launch("sum_all kernel");
      return;
    }
    const int parts = std::min(dk::grid_for(n), 1024);
    T* partial = allocate<T>(parts);
    dk::sum_all_partial<<<parts, dk::block, 0, cuda::stream()>>>(partial, rows, cols, k, false);
    dk::check_launch("sum_all kernel");
    dk::sum_all_final<<<1, dk::block, 0, cuda::stream()>>>(out, partial, parts, accumulate);
    dk::check_launch("sum_all final kernel");
    deallocate(partial, parts);  // stream-ordered: later reuse queues after this kernel
  }

  template <class T>
  static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
                   index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
    if (m > 0 && n > 0 && k > 0 && (m <= 8 || n <= 8 || k <= 8)) {
      namespace dk = detail::kernels;
      const index_t threads = m * n * (k > 32 ? 32 : 1);
      const auto blocks = static_cast<unsigned>((threads + dk::block - 1) / dk::block);
      dk::skinny_gemm<<<blocks, dk::block, 0, cuda::stream()>>>(trans_a, trans_b, m, n, k, alpha, A,
                                                                lda, B, ldb, beta, C, ldc);
      dk::check_launch("skinny gemm kernel");
      return;
    }
    constexpr index_t lim = std::numeric_limits<int>::max();
    if (m > lim || n > lim || k > lim || lda > lim || ldb > lim || ldc > lim)
      throw shape_error("cuda gemm: dimensions exceed cuBLAS's 32-bit sizes");
    cuda::gemm<T>(trans_a, trans_b, int(m), int(n), int(k), alpha, A, int(lda), B, int(ldb), beta,
                  C, int(ldc));
    ++detail::kernels::launch_count();
  }

  /// dst row i = src row idx[i], idx given on the host (uploaded through the pool).
  template <class T>
  static void gather_rows(T* dst, const T* src, const std::uint32_t* host_idx, index_t n,
                          index_t cols) {
    if (n == 0) return;
    namespace dk = detail::kernels;
    auto* idx = allocate<std::uint32_t>(n);
    from_host(idx, host_idx, n);
    dk::gather_rows<<<dk::grid_for(n * cols), dk::block, 0, cuda::stream()>>>(dst, src, idx, n,
                                                                              cols);
    dk::check_launch("gather_rows kernel");
    deallocate(idx, n);
  }

  /// out[r] = max over row r (a row of none gives -inf).
  template <class T, class K>
  static void max_cols(T* out, index_t rows, index_t cols, const K& k) {
    if (rows == 0) return;
    namespace dk = detail::kernels;
    const auto grid = static_cast<unsigned>(std::min<index_t>(rows, 65535));
    dk::max_cols<<<grid, dk::block, 0, cuda::stream()>>>(out, rows, cols, k);
    dk::check_launch("max_cols kernel");
  }

  /// dst row idx[i] += src row i (idx on the host). Deterministic: the host groups the
  /// indices by destination, and each destination adds its rows in the order of i.
  template <class T>
  static void scatter_add_rows(T* dst, const T* src, const std::uint32_t* host_idx, index_t n,
                               index_t cols) {
    if (n == 0 || cols == 0) return;
    namespace dk = detail::kernels;
    std::vector<std::uint32_t> order(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = static_cast<std::uint32_t>(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return host_idx[a] < host_idx[b]; });
    std::vector<std::uint32_t> dest, starts;
    for (std::size_t j = 0; j < order.size(); ++j)
      if (j == 0 || host_idx[order[j]] != host_idx[order[j - 1]]) {
        dest.push_back(host_idx[order[j]]);
        starts.push_back(static_cast<std::uint32_t>(j));
      }
    starts.push_back(static_cast<std::uint32_t>(n));
    const auto groups = static_cast<index_t>(dest.size());
    std::vector<std::uint32_t> plan(order);
    plan.insert(plan.end(), dest.begin(), dest.end());
    plan.insert(plan.end(), starts.begin(), starts.end());
    const auto len = static_cast<index_t>(plan.size());
    auto* dplan = allocate<std::uint32_t>(len);
    from_host(dplan, plan.data(), len);  // pageable: staged before this returns
    dk::scatter_add_rows<<<dk::grid_for(groups * cols), dk::block, 0, cuda::stream()>>>(
        dst, src, dplan, n, groups, cols);
    dk::check_launch("scatter_add_rows kernel");
    deallocate(dplan, len);
  }

 private:
  static constexpr index_t small_reduction = 1 << 16;

  template <class T, class K>
  static void launch_sum_rows(T* out, T* dst, index_t rows, index_t cols, const K& k,
                              bool accumulate) {
    if (cols == 0) return;
    namespace dk = detail::kernels;
    const auto grid = static_cast<unsigned>((cols + 31) / 32);
    dk::sum_rows<<<grid, dim3(32, 8), 0, cuda::stream()>>>(out, dst, rows, cols, k, accumulate);
    dk::check_launch("sum_rows kernel");
  }
};

}  // namespace siam

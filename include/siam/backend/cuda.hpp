// The CUDA backend: the same interface as siam::Cpu, on one stream of the current
// device. Memory comes from the stream-ordered pool of cuda_runtime.hpp; GEMM goes to
// cuBLAS's 64-bit entry point (FP32 without TF32 unless cuda::set_tf32(true)); every
// elementwise expression runs as ONE kernel whose functor is the expression's kernel
// tree; reductions are two-level tree reductions (shared memory, then a second pass),
// never atomics, so results are deterministic run to run. Indexing is 64-bit and every
// kernel walks its range with a grid-stride loop over a capped grid, so any tensor size
// that fits in memory is handled. Set SIAM_CUDA_SYNC_CHECK=1 to check after each launch
// (cuda::sync_check_enabled()).
//
// This header must be compiled by nvcc: a translation unit that uses Tensor<T, Cuda>
// is a .cu file (see docs/backends.md).
#pragma once

#if !defined(__CUDACC__)
#error "siam/backend/cuda.hpp needs nvcc: compile this translation unit as CUDA (.cu)"
#endif

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory_resource>
#include <optional>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <math_constants.h>

#include "siam/backend/cuda_graph.hpp"
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

// Column totals, first level. A block of 32 x 8 threads owns 32 columns (striding over
// column tiles) and one chunk of `chunk_rows` rows (blockIdx.y); its 8 thread rows stride
// down the chunk, then combine in shared memory. With one chunk the block writes the
// totals to out (accumulate applies); with several it writes chunk y's totals to row y of
// out (a chunks x cols partial array) for sum_rows_final. Optionally stores the values.
template <class T, class K>
__global__ void sum_rows(T* out, T* dst, index_t rows, index_t cols, K k, bool accumulate,
                         index_t chunk_rows) {
  __shared__ T part[8][33];
  const index_t r0 = blockIdx.y * chunk_rows;
  const index_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  T* totals = out + (gridDim.y > 1 ? blockIdx.y * cols : index_t(0));
  for (index_t tile = blockIdx.x * index_t(32); tile < cols; tile += gridDim.x * index_t(32)) {
    const index_t c = tile + threadIdx.x;
    T acc = 0;
    if (c < cols)
      for (index_t r = r0 + threadIdx.y; r < r1; r += 8) {
        const T v = k(r, c);
        if (dst) dst[r * cols + c] = v;
        acc += v;
      }
    __syncthreads();  // the previous tile's totals have been read
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
      T total = 0;
      for (int y = 0; y < 8; ++y)
        total += part[y][threadIdx.x];
      totals[c] = accumulate ? totals[c] + total : total;
    }
  }
}
// Second level: column c's chunk totals added in chunk order (deterministic), in double:
// a chunk holds at most 64 Ki rows (8 Ki per thread), so the float partials are good to
// float's level and the double sum keeps them so for any number of chunks.
template <class T>
__global__ void sum_rows_final(T* out, const T* partial, index_t chunks, index_t cols,
                               bool accumulate) {
  for (index_t c = blockIdx.x * index_t(blockDim.x) + threadIdx.x; c < cols;
       c += index_t(gridDim.x) * blockDim.x) {
    double total = 0;
    for (index_t y = 0; y < chunks; ++y)
      total += static_cast<double>(partial[y * cols + c]);
    out[c] = accumulate ? T(double(out[c]) + total) : T(total);
  }
}

// Block-wide sum of one value per thread (blockDim.x == block).
// Callable repeatedly by the same block (it first waits until the last result was read).
template <class T>
__device__ T block_sum(T v) {
  __shared__ T s[block];
  __syncthreads();
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = block / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

// Row totals: one block per row, blocks striding over the rows.
template <class T, class K>
__global__ void sum_cols(T* out, index_t rows, index_t cols, K k, bool accumulate) {
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T acc = 0;
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x)
      acc += k(r, c);
    const T total = block_sum(acc);
    if (threadIdx.x == 0) out[r] = accumulate ? out[r] + total : total;
  }
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
// Second level: one block adds the partials in a fixed order, in double (each partial is a
// block's tree sum of at most 128 strided elements per thread, see Cuda::sum_all).
template <class T>
__global__ void sum_all_final(T* out, const T* partial, int nparts, bool accumulate) {
  double acc = 0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x)
    acc += static_cast<double>(partial[i]);
  const double total = block_sum(acc);
  if (threadIdx.x == 0) out[0] = accumulate ? T(double(out[0]) + total) : T(total);
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
      m = (v > m || v != v) ? v : m;  // NaN propagates (as the host's max_cols)
    }
    s[threadIdx.x] = m;
    __syncthreads();
    for (int w = block / 2; w > 0; w /= 2) {
      if (threadIdx.x < w &&
          (s[threadIdx.x + w] > s[threadIdx.x] || s[threadIdx.x + w] != s[threadIdx.x + w]))
        s[threadIdx.x] = s[threadIdx.x + w];
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
// Outputs are walked with a grid-stride loop; in the per-warp mode the stride is in
// whole warps (blockDim.x is a multiple of 32), so a warp's lanes share each output and
// leave the loop together.
template <class T>
__global__ void skinny_gemm(bool ta, bool tb, index_t m, index_t n, index_t k, T alpha, const T* A,
                            index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  const bool per_warp = k > 32;
  const index_t gid = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  const index_t threads = index_t(gridDim.x) * blockDim.x;
  const int lane = per_warp ? int(threadIdx.x % 32) : 0;
  for (index_t out = per_warp ? gid / 32 : gid; out < m * n;
       out += per_warp ? threads / 32 : threads) {
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
    if (lane == 0)
      C[i * ldc + j] = beta == T(0) ? alpha * acc : alpha * acc + beta * C[i * ldc + j];
  }
}

// Batch-hard mining, one block per anchor row a of the n x n distance matrix d: the hardest
// positive p (largest d[a, j] over j != a with labels[j] == labels[a]) and the hardest negative
// q (smallest d[a, j] over labels[j] != labels[a]), ties to the smaller j, as the host's loop
// in loss/mining.hpp (first strict improvement in ascending j). Writes row a of the one-hot
// matrices pos (1 at p) and neg (1 at q), all zeros where there is none.
template <class T>
__global__ void mine_batch_hard(const T* d, const std::int64_t* labels, index_t n, T* pos, T* neg) {
  __shared__ T pv[block], nv[block];
  __shared__ index_t pj[block], nj[block];
  for (index_t a = blockIdx.x; a < n; a += gridDim.x) {
    const std::int64_t la = labels[a];
    T bpv = 0, bnv = 0;
    index_t bpj = -1, bnj = -1;
    for (index_t j = threadIdx.x; j < n; j += blockDim.x) {  // ascending j per thread
      const T v = d[a * n + j];
      if (labels[j] == la) {
        if (j != a && (bpj < 0 || v > bpv)) bpv = v, bpj = j;
      } else if (bnj < 0 || v < bnv) {
        bnv = v, bnj = j;
      }
    }
    pv[threadIdx.x] = bpv, pj[threadIdx.x] = bpj, nv[threadIdx.x] = bnv, nj[threadIdx.x] = bnj;
    __syncthreads();
    for (int w = block / 2; w > 0; w /= 2) {
      if (threadIdx.x < w) {
        const int o = threadIdx.x + w;
        // The better of two candidates; equal values: the smaller index.
        if (pj[o] >= 0 && (pj[threadIdx.x] < 0 || pv[o] > pv[threadIdx.x] ||
                           (pv[o] == pv[threadIdx.x] && pj[o] < pj[threadIdx.x])))
          pv[threadIdx.x] = pv[o], pj[threadIdx.x] = pj[o];
        if (nj[o] >= 0 && (nj[threadIdx.x] < 0 || nv[o] < nv[threadIdx.x] ||
                           (nv[o] == nv[threadIdx.x] && nj[o] < nj[threadIdx.x])))
          nv[threadIdx.x] = nv[o], nj[threadIdx.x] = nj[o];
      }
      __syncthreads();
    }
    const index_t p = pj[0], q = nj[0];
    for (index_t j = threadIdx.x; j < n; j += blockDim.x) {
      pos[a * n + j] = j == p ? T(1) : T(0);
      neg[a * n + j] = j == q ? T(1) : T(0);
    }
    __syncthreads();  // the shared arrays are reused by the next row
  }
}

// FP32 -> BF16, rounded to nearest (ties to even, as the CPU's emulation of the mode): the
// rows x cols matrix at src with row stride ld, packed into dst (row stride cols). (A
// template, like every kernel in this header: a plain __global__ function defined in a
// header is defined again by each translation unit that includes it.)
template <class F = float>
__global__ void round_to_bf16(__nv_bfloat16* dst, const F* src, index_t rows, index_t cols,
                              index_t ld) {
  const index_t n = rows * cols;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / cols;
    dst[i] = __float2bfloat16_rn(src[r * ld + (i - r * cols)]);
  }
}

/// Blocks for a grid-stride loop over n items (one thread each): at most max_blocks, at
/// least 1. The cap keeps every grid far below CUDA's limit (2^31 - 1 blocks in x).
inline int grid_for(index_t n, index_t max_blocks = 4096) {
  const index_t blocks = (n + block - 1) / block;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > max_blocks ? max_blocks : blocks));
}

/// Kernel launches (and GEMM calls) issued so far by this process, all threads together:
/// the training step on a GPU is launch-bound, so the benchmark reports launches per step.
inline std::uint64_t launch_count() noexcept {
  return cuda::launch_count();
}

/// After a launch on `s`: counts it and throws cuda_error naming `what` if it failed (in the
/// SIAM_CUDA_SYNC_CHECK mode also if the kernel faulted while running).
inline void check_launch(const char* what, cudaStream_t s) {
  cuda::check_launch(what, s);
}

}  // namespace detail::kernels

struct Cuda {
  static constexpr bool is_host = false;

 private:
  static std::optional<cuda::Event>& pinned_upload_event() {
    thread_local std::optional<cuda::Event> done;  // recorded after this thread's last copy
    return done;
  }

 public:
  static constexpr const char* name = "cuda";
  /// Capture-and-replay of a step as one CUDA graph (cuda_graph.hpp).
  using StepGraph = cuda::Graph;
  static constexpr const char* gemm_name() { return "cublas"; }
  /// How the current device's FP32 GEMMs compute (cuda::set_matmul_precision).
  static MatmulPrecision matmul_precision() { return cuda::matmul_precision(); }
  static void set_matmul_precision(MatmulPrecision p) { cuda::set_matmul_precision(p); }

  /// n elements from the current device's pool (stream-ordered; cuda_out_of_memory when
  /// the device has no room).
  template <class T>
  static T* allocate(index_t n) {
    if (n < 0) throw value_error("cuda allocate: negative element count " + std::to_string(n));
    return static_cast<T*>(cuda::allocate(static_cast<std::size_t>(n) * sizeof(T)));
  }
  /// Returns memory from allocate<T>(n) to the pool of the device it came from, whichever
  /// device is current. Never throws (destructors call it): a failure is counted and the
  /// first one logged (cuda::free_error_count()).
  template <class T>
  static void deallocate(T* p, index_t n) noexcept {
    if (!p) return;
    try {
      cuda::deallocate(p, static_cast<std::size_t>(n) * sizeof(T));
    } catch (const std::exception& e) {
      cuda::report_free_error(e.what());
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
  /// Queues a copy from host memory (pageable or pinned) through the context's pinned
  /// staging ring (cuda::upload): when this returns, `host_src` has been read and may be
  /// reused or freed. The host waits for the device only while the ring is full (4 MiB or
  /// 64 copies not yet done on the stream), never otherwise.
  template <class T>
  static void from_host(T* dst, const T* host_src, index_t n) {
    if (n <= 0) return;
    cuda::upload(dst, host_src, static_cast<std::size_t>(n));
  }
  static void synchronize() { cuda::synchronize(); }

  /// Page-locked host memory (cuda::pinned_memory()). A buffer there goes to the device by
  /// from_pinned_host, a DMA without staging; the image loader keeps its batches there.
  static std::pmr::memory_resource* pinned_host_memory() { return &cuda::pinned_memory(); }
  /// Queues a copy from page-locked host memory and returns at once: `host_src` must stay
  /// unchanged until wait_pinned_uploads() has returned (this thread's last such copy done).
  template <class T>
  static void from_pinned_host(T* dst, const T* host_src, index_t n) {
    if (n <= 0) return;
    cuda::copy_to_device_async(dst, host_src, static_cast<std::size_t>(n));
    auto& done = pinned_upload_event();
    if (!done) done.emplace();
    done->record(cuda::stream());
  }
  static void wait_pinned_uploads() {
    if (auto& done = pinned_upload_event()) done->synchronize();
  }

  template <class T, class K>
  static void assign(T* dst, index_t rows, index_t cols, const K& k) {
    const index_t n = rows * cols;
    if (n == 0) return;
    namespace dk = detail::kernels;
    cuda::check_device_of(dst, "assign");
    const cudaStream_t st = cuda::stream();
    dk::assign<<<dk::grid_for(n), dk::block, 0, st>>>(dst, rows, cols, k);
    dk::check_launch("assign kernel", st);
  }

  template <class T, class... Pairs>
  static void assign_fused(index_t n, const Pairs&... pairs) {
    if (n == 0) return;
    namespace dk = detail::kernels;
    (cuda::check_device_of(pairs.first, "fused assign"), ...);
    const cudaStream_t st = cuda::stream();
    dk::assign_fused<T><<<dk::grid_for(n), dk::block, 0, st>>>(n, pairs...);
    dk::check_launch("fused assign kernel", st);
  }

  template <class T, class G>
  static void assign_fused_batch(const G* groups, std::size_t count) {
    namespace dk = detail::kernels;
    constexpr std::size_t cap = dk::GroupArray<G>::capacity;
    const cudaStream_t st = cuda::stream();
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
      dk::assign_fused_batch<<<grid, dk::block, 0, st>>>(a);
      dk::check_launch("fused batch kernel", st);
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
    cuda::check_device_of(out, "sum_cols");
    const cudaStream_t st = cuda::stream();
    const auto grid = static_cast<unsigned>(std::min<index_t>(rows, max_row_blocks));
    dk::sum_cols<<<grid, dk::block, 0, st>>>(out, rows, cols, k, accumulate);
    dk::check_launch("sum_cols kernel", st);
  }

  template <class T, class K>
  static void sum_all(T* out, index_t rows, index_t cols, const K& k, bool accumulate) {
    namespace dk = detail::kernels;
    cuda::check_device_of(out, "sum_all");
    const cudaStream_t st = cuda::stream();
    const index_t n = rows * cols;
    if (n <= small_reduction) {  // one block, one launch: the loss, biases, small tensors
      dk::sum_all_partial<<<1, dk::block, 0, st>>>(out, rows, cols, k, accumulate);
      dk::check_launch("sum_all kernel", st);
      return;
    }
    // Enough blocks that each thread adds at most ~128 elements in T (error at T's level for
    // any length); the partials are added in double (sum_all_final).
    const index_t wanted = std::clamp<index_t>(n / (index_t(dk::block) * 128), 1024, 65536);
    const int parts = dk::grid_for(n, wanted);
    cuda::DeviceBuffer<T> partial(static_cast<std::size_t>(parts));  // freed in stream order
    dk::sum_all_partial<<<parts, dk::block, 0, st>>>(partial.data(), rows, cols, k, false);
    dk::check_launch("sum_all kernel", st);
    dk::sum_all_final<<<1, dk::block, 0, st>>>(out, partial.data(), parts, accumulate);
    dk::check_launch("sum_all final kernel", st);
  }

  /// Row-major Y = act(X W + 1 bias) with the bias (and ReLU) in the GEMM's epilogue
  /// (cuda::gemm_bias, cuBLASLt). Returns false, doing nothing, for the skinny kernel's
  /// shapes (a dimension of at most 8) and where cuBLASLt has no algorithm: the caller then
  /// runs gemm() and one elementwise pass.
  template <class T>
  static bool gemm_bias(bool relu, index_t m, index_t n, index_t k, const T* X, index_t ldx,
                        const T* W, index_t ldw, const T* bias, T* Y, index_t ldy) {
    if (m <= 8 || n <= 8 || k <= 8) return false;
    cuda::check_device_of(Y, "gemm_bias");
    if (!cuda::gemm_bias<T>(relu, m, n, k, X, ldx, W, ldw, bias, Y, ldy)) return false;
    detail::kernels::check_launch("cuBLASLt gemm with bias epilogue", cuda::stream());
    return true;
  }

  /// Row-major C = alpha op(A) op(B) + beta C (cuda::gemm's contract, 64-bit sizes).
  /// Products with a dimension of at most 8 run in a small kernel instead of cuBLAS.
  template <class T>
  static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A,
                   index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
    if (m > 0 && n > 0 && k > 0 && (m <= 8 || n <= 8 || k <= 8)) {
      namespace dk = detail::kernels;
      detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
      cuda::check_device_of(C, "gemm");
      const cudaStream_t st = cuda::stream();
      const index_t threads = m * n * (k > 32 ? 32 : 1);
      dk::skinny_gemm<<<dk::grid_for(threads, 65536), dk::block, 0, st>>>(
          trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
      dk::check_launch("skinny gemm kernel", st);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (m > 0 && n > 0 && k > 0 && cuda::matmul_precision() == MatmulPrecision::medium) {
        gemm_bf16(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
      }
    }
    cuda::gemm<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    cuda::launch_counter().fetch_add(1, std::memory_order_relaxed);
    if (cuda::sync_check_enabled()) {
      const cudaError_t ran = cudaStreamSynchronize(cuda::stream());
      if (ran != cudaSuccess)
        throw cuda_error(std::string("cuBLAS gemm failed while running (SIAM_CUDA_SYNC_CHECK): ") +
                         cudaGetErrorName(ran));
    }
  }

  /// dst row i = src row idx[i], idx given on the host (uploaded through the staging ring,
  /// so `host_idx` may be reused when this returns).
  template <class T>
  static void gather_rows(T* dst, const T* src, const std::uint32_t* host_idx, index_t n,
                          index_t cols) {
    if (n == 0) return;
    namespace dk = detail::kernels;
    cuda::check_device_of(dst, "gather_rows");
    cuda::DeviceBuffer<std::uint32_t> idx(static_cast<std::size_t>(n));  // freed in stream order
    cuda::upload(idx.data(), host_idx, static_cast<std::size_t>(n));
    const cudaStream_t st = cuda::stream();
    dk::gather_rows<<<dk::grid_for(n * cols), dk::block, 0, st>>>(dst, src, idx.data(), n, cols);
    dk::check_launch("gather_rows kernel", st);
  }

  /// Batch-hard mining on the device (kernels::mine_batch_hard): d is the n x n distance
  /// matrix, host_labels the n class labels (uploaded like gather_rows' indices); writes the
  /// n x n one-hot rows of each anchor's hardest positive (pos) and negative (neg), a row of
  /// zeros where there is none. No host synchronisation.
  template <class T>
  static void mine_batch_hard(const T* d, const std::int64_t* host_labels, index_t n, T* pos,
                              T* neg) {
    if (n == 0) return;
    namespace dk = detail::kernels;
    cuda::check_device_of(d, "mine_batch_hard");
    cuda::DeviceBuffer<std::int64_t> labels(static_cast<std::size_t>(n));  // stream-ordered
    cuda::upload(labels.data(), host_labels, static_cast<std::size_t>(n));
    const cudaStream_t st = cuda::stream();
    const auto grid = static_cast<unsigned>(std::min<index_t>(n, 65535));
    dk::mine_batch_hard<<<grid, dk::block, 0, st>>>(d, labels.data(), n, pos, neg);
    dk::check_launch("mine_batch_hard kernel", st);
  }

  /// out[r] = max over row r (a row of none gives -inf).
  template <class T, class K>
  static void max_cols(T* out, index_t rows, index_t cols, const K& k) {
    if (rows == 0) return;
    namespace dk = detail::kernels;
    cuda::check_device_of(out, "max_cols");
    const auto grid = static_cast<unsigned>(std::min<index_t>(rows, 65535));
    const cudaStream_t st = cuda::stream();
    dk::max_cols<<<grid, dk::block, 0, st>>>(out, rows, cols, k);
    dk::check_launch("max_cols kernel", st);
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
    cuda::check_device_of(dst, "scatter_add_rows");
    cuda::DeviceBuffer<std::uint32_t> dplan(plan.size());  // freed in stream order
    cuda::upload(dplan.data(), plan.data(), plan.size());
    const cudaStream_t st = cuda::stream();
    dk::scatter_add_rows<<<dk::grid_for(groups * cols), dk::block, 0, st>>>(dst, src, dplan.data(),
                                                                            n, groups, cols);
    dk::check_launch("scatter_add_rows kernel", st);
  }

 private:
  // The BF16 mode: op(A) and op(B) rounded to BF16 into packed scratch (stream-ordered pool
  // memory), then a BF16-input GEMM accumulating in FP32 (cuda::gemm_bf16_inputs).
  static void gemm_bf16(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha,
                        const float* A, index_t lda, const float* B, index_t ldb, float beta,
                        float* C, index_t ldc) {
    namespace dk = detail::kernels;
    detail::check_gemm_dims(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc);
    cuda::check_device_of(C, "gemm");
    const cudaStream_t st = cuda::stream();
    const index_t ar = trans_a ? k : m, ac = trans_a ? m : k;  // A as stored
    const index_t br = trans_b ? n : k, bc = trans_b ? k : n;  // B as stored
    cuda::DeviceBuffer<__nv_bfloat16> a16(static_cast<std::size_t>(ar * ac)),
        b16(static_cast<std::size_t>(br * bc));
    dk::round_to_bf16<float>
        <<<dk::grid_for(ar * ac), dk::block, 0, st>>>(a16.data(), A, ar, ac, lda);
    dk::check_launch("round_to_bf16 kernel", st);
    dk::round_to_bf16<float>
        <<<dk::grid_for(br * bc), dk::block, 0, st>>>(b16.data(), B, br, bc, ldb);
    dk::check_launch("round_to_bf16 kernel", st);
    cuda::gemm_bf16_inputs(trans_a, trans_b, m, n, k, alpha, a16.data(), ac, b16.data(), bc, beta,
                           C, ldc);
    cuda::launch_counter().fetch_add(1, std::memory_order_relaxed);
    if (cuda::sync_check_enabled()) {
      const cudaError_t ran = cudaStreamSynchronize(st);
      if (ran != cudaSuccess)
        throw cuda_error(std::string("cuBLAS BF16 gemm failed while running "
                                     "(SIAM_CUDA_SYNC_CHECK): ") +
                         cudaGetErrorName(ran));
    }
  }

  static constexpr index_t small_reduction = 1 << 16;
  static constexpr index_t max_row_blocks = 65536;  // sum_cols: blocks stride over rows beyond
  static constexpr index_t max_chunk_rows = 65536;  // sum_rows: rows per first-level chunk

  // Column totals in two levels when the input is tall: rows are cut into chunks (one grid
  // row of blocks each) whose totals a second kernel adds in chunk order. The chunking
  // depends on the shape only, so results are the same run to run and device to device.
  template <class T, class K>
  static void launch_sum_rows(T* out, T* dst, index_t rows, index_t cols, const K& k,
                              bool accumulate) {
    if (cols == 0) return;
    namespace dk = detail::kernels;
    cuda::check_device_of(out, "sum_rows");
    const cudaStream_t st = cuda::stream();
    const index_t tiles = (cols + 31) / 32;
    const index_t grid_x = std::min<index_t>(tiles, 65535);
    index_t chunks = 1;
    // Few blocks for many rows: split the rows too, into enough chunks to fill the device
    // and at most 64 Ki rows each (so a thread adds at most 8 Ki values in T; the chunk
    // totals are added in double by sum_rows_final).
    if (rows > 2048 && (tiles < 256 || rows > max_chunk_rows))
      chunks = std::min<index_t>(
          {(rows + 511) / 512,
           std::max((1024 + tiles - 1) / tiles, (rows + max_chunk_rows - 1) / max_chunk_rows),
           65535});
    const index_t chunk_rows = (rows + chunks - 1) / chunks;
    chunks = rows == 0 ? 1 : (rows + chunk_rows - 1) / chunk_rows;
    if (chunks == 1) {
      dk::sum_rows<<<dim3(unsigned(grid_x), 1), dim3(32, 8), 0, st>>>(out, dst, rows, cols, k,
                                                                      accumulate, rows);
      dk::check_launch("sum_rows kernel", st);
      return;
    }
    cuda::DeviceBuffer<T> partial(static_cast<std::size_t>(chunks * cols));
    dk::sum_rows<<<dim3(unsigned(grid_x), unsigned(chunks)), dim3(32, 8), 0, st>>>(
        partial.data(), dst, rows, cols, k, false, chunk_rows);
    dk::check_launch("sum_rows kernel (chunked)", st);
    dk::sum_rows_final<<<dk::grid_for(cols), dk::block, 0, st>>>(out, partial.data(), chunks, cols,
                                                                 accumulate);
    dk::check_launch("sum_rows final kernel", st);
  }
};

}  // namespace siam

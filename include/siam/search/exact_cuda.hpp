// Exact k-nearest-neighbour search on the GPU: search::knn_cuda, the same contract as
// search::knn (exact.hpp) with the distances from cuBLAS and the selection in a kernel.
// nvcc only (include it from a .cu file); never in the umbrella header.
//
//   auto r = search::knn_cuda(queries, gallery, 10, search::Metric::l2);
//
// The gallery and a block of queries go to the device; per block of up to 1,024 queries and
// 65,536 gallery rows one FP32 GEMM (CUBLAS_COMPUTE_32F_PEDANTIC whatever the context's
// matmul precision, which is left as it is: no TF32) gives the dot products, and a kernel
// turns them into distances (|q|^2 + |g|^2 - 2 q.g clamped at 0, the norms computed on the
// host exactly as knn does, or -q.g for inner_product) and merges them into each query's
// running top k, ordered by
// (distance, gallery index). One warp per query: each lane keeps a sorted list of its best
// k over a strided slice of the tile, then lane 0 merges the 32 lists and the running one.
// k is at most max_gpu_k (128); larger k throws value_error (use search::knn).
// Results agree with search::knn except where the GPU's and the CPU's rounding of a dot
// product reorders distances that differ by about 1e-7 of the norms.
// Memory on the device: the gallery, one query block, one distance tile (256 MB) and the
// running lists.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "siam/backend/cuda_runtime.hpp"
#include "siam/search/exact.hpp"
#include "siam/search/types.hpp"

namespace siam::search {

inline constexpr index_t max_gpu_k = 128;

namespace detail::gpu {

constexpr int warp = 32;

struct Cand {
  float d;
  std::int64_t i;
};

__device__ inline bool before(float da, std::int64_t ia, float db, std::int64_t ib) {
  return da < db || (da == db && ia < ib);
}

// Inserts (d, i) into the sorted list l[0, n) of capacity k (n grows up to k).
__device__ inline void insert(Cand* l, int& n, int k, float d, std::int64_t i) {
  if (n == k && !before(d, i, l[k - 1].d, l[k - 1].i)) return;
  int p = n < k ? n++ : k - 1;
  while (p > 0 && before(d, i, l[p - 1].d, l[p - 1].i)) {
    l[p] = l[p - 1];
    --p;
  }
  l[p] = {d, i};
}

// One warp per query row q of the tile: dots[q, 0..cols) are the products with gallery rows
// g0.., merged into best[q, 0..k) (best_n[q] valid entries). scratch holds 32 k entries
// per query (the lanes' lists).
__global__ void merge_tile(const float* dots, index_t rows, index_t cols, index_t ld,
                           const float* qn, const float* gn, index_t g0, bool l2,
                           std::int64_t self_q0, bool exclude_self, int k, Cand* scratch,
                           Cand* best, int* best_n) {
  const index_t q = static_cast<index_t>(blockIdx.x) * (blockDim.x / warp) + threadIdx.x / warp;
  const int lane = static_cast<int>(threadIdx.x % warp);
  if (q >= rows) return;
  Cand* mine = scratch + (q * warp + lane) * k;
  int n = 0;
  const float* row = dots + q * ld;
  const std::int64_t self = self_q0 + q;
  for (index_t j = lane; j < cols; j += warp) {
    const std::int64_t gi = g0 + j;
    if (exclude_self && gi == self) continue;
    float d = l2 ? qn[q] + gn[gi] - 2.0f * row[j] : -row[j];
    if (l2 && d < 0.0f) d = 0.0f;
    insert(mine, n, k, d, gi);
  }
  __syncwarp();
  // Lane 0 merges: the running list and the 32 lane lists (each sorted) by repeated minimum.
  // The lane lists' lengths travel through their unused tails: mark the end with +inf, -1.
  if (n < k) mine[n] = {__int_as_float(0x7f800000), -1};
  __syncwarp();
  if (lane != 0) return;
  Cand* run = best + q * k;
  const int have = best_n[q];
  Cand out[max_gpu_k];
  int head[warp + 1] = {};
  int got = 0;
  while (got < k) {
    int pick = -1;
    float pd = 0.0f;
    std::int64_t pi = 0;
    for (int s = 0; s <= warp; ++s) {
      Cand c;
      if (s == warp) {
        if (head[s] >= have) continue;
        c = run[head[s]];
      } else {
        if (head[s] >= k) continue;
        c = scratch[(q * warp + s) * k + head[s]];
        if (c.i < 0) continue;
      }
      if (pick < 0 || before(c.d, c.i, pd, pi)) pick = s, pd = c.d, pi = c.i;
    }
    if (pick < 0) break;
    out[got++] = {pd, pi};
    ++head[pick];
  }
  for (int r = 0; r < got; ++r)
    run[r] = out[r];
  best_n[q] = got;
}

}  // namespace detail::gpu

/// search::knn on the current CUDA device (see the header comment). Same arguments, checks
/// and Result as knn; opt.threads and the block sizes are ignored.
inline Result knn_cuda(const Rows& queries, const Rows& gallery, index_t k,
                       Metric metric = Metric::l2, const Options& opt = {}) {
  namespace g = detail::gpu;
  const char* op = "search::knn_cuda";
  detail::validate(queries, gallery, k, metric, opt, op);
  if (k > max_gpu_k)
    throw value_error(std::string(op) + ": k = " + std::to_string(k) + " above " +
                      std::to_string(max_gpu_k) + " (use search::knn)");
  Result r;
  r.queries = queries.count;
  r.k = k;
  r.indices.assign(static_cast<std::size_t>(queries.count * k), -1);
  r.distances.assign(static_cast<std::size_t>(queries.count * k), 0.0f);
  if (queries.count == 0) return r;
  detail::check_finite(op, "queries", queries);
  detail::check_finite(op, "gallery", gallery);
  cuda::require_device();
  const bool l2 = metric == Metric::l2;
  const auto qn = detail::squared_norms(op, "queries", queries);
  const auto gn = detail::squared_norms(op, "gallery", gallery);
  const index_t dim = gallery.dim, qb = 1024, gb = 65536;
  const index_t tile_cols = std::min(gb, gallery.count);
  cuda::DeviceBuffer<float> dg(static_cast<std::size_t>(gallery.count * dim));
  cuda::DeviceBuffer<float> dgn(gn.size()), dq(static_cast<std::size_t>(qb * dim)),
      dqn(static_cast<std::size_t>(qb)), tile(static_cast<std::size_t>(qb * tile_cols));
  cuda::DeviceBuffer<g::Cand> scratch(static_cast<std::size_t>(qb * g::warp * k)),
      best(static_cast<std::size_t>(qb * k));
  cuda::DeviceBuffer<int> best_n(static_cast<std::size_t>(qb));
  cuda::copy_to_device(dg.data(), gallery.data, dg.size());
  cuda::copy_to_device(dgn.data(), gn.data(), gn.size());
  std::vector<g::Cand> host(static_cast<std::size_t>(qb * k));
  std::vector<int> host_n(static_cast<std::size_t>(qb));
  const cudaStream_t s = cuda::stream();
  for (index_t q0 = 0; q0 < queries.count; q0 += qb) {
    const index_t m = std::min(qb, queries.count - q0);
    cuda::copy_to_device(dq.data(), queries.row(q0), static_cast<std::size_t>(m * dim));
    cuda::copy_to_device(dqn.data(), qn.data() + q0, static_cast<std::size_t>(m));
    SIAM_CUDA_CHECK(
        cudaMemsetAsync(best_n.data(), 0, static_cast<std::size_t>(m) * sizeof(int), s));
    for (index_t g0 = 0; g0 < gallery.count; g0 += gb) {
      const index_t n = std::min(gb, gallery.count - g0);
      cuda::gemm<float>(false, true, m, n, dim, 1.0f, dq.data(), dim, dg.data() + g0 * dim, dim,
                        0.0f, tile.data(), tile_cols, MatmulPrecision::highest);  // no TF32
      constexpr int per_block = 4;  // warps (queries) per block
      const auto blocks = static_cast<unsigned>((m + per_block - 1) / per_block);
      g::merge_tile<<<blocks, per_block * g::warp, 0, s>>>(
          tile.data(), m, n, tile_cols, dqn.data(), dgn.data(), g0, l2,
          static_cast<std::int64_t>(opt.self_offset + q0), opt.exclude_self, static_cast<int>(k),
          scratch.data(), best.data(), best_n.data());
      SIAM_CUDA_CHECK(cudaGetLastError());
    }
    cuda::copy_to_host(host.data(), best.data(), static_cast<std::size_t>(m * k));
    cuda::copy_to_host(host_n.data(), best_n.data(), static_cast<std::size_t>(m));
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < host_n[static_cast<std::size_t>(i)]; ++j) {
        const auto& c = host[static_cast<std::size_t>(i * k + j)];
        const auto at = static_cast<std::size_t>((q0 + i) * k + j);
        r.indices[at] = c.i;
        r.distances[at] = l2 ? c.d : -c.d;
      }
  }
  return r;
}

}  // namespace siam::search

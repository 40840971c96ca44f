// The CUDA runtime layer of siam's GPU backend: checked CUDA/cuBLAS calls, device discovery, a
// lazily created per-device context (one stream, one cuBLAS handle, a stream-ordered memory pool
// and a pinned staging ring), host/device copies, launch checks and a row-major GEMM. The
// backend's expression kernels sit on top of it. docs/cuda.md describes the design. This header
// includes its parts, one concern each: cuda_error.hpp (checked calls, the error types),
// cuda_device.hpp (device discovery, RAII handles, DeviceGuard), cuda_pool.hpp (the memory
// pool), cuda_staging.hpp (the pinned staging ring), cuda_context.hpp (the per-device context
// and stream, launch checks, buffers, events, copies) and cuda_blas.hpp (cuBLAS / cuBLASLt GEMM).
//
// Ordering model (read this before adding a kernel): everything siam does on a device is issued
// on that device's single context stream, `stream()`, from any number of host threads. Device
// memory is allocated and freed in stream order (cudaMallocFromPoolAsync / cudaFreeAsync on that
// stream), so a block handed back may be handed out again at once: later work that writes it is
// queued behind the work still reading it. Work on any OTHER stream that uses pool memory must be
// declared with record_stream(block, other_stream); the block's free then waits for it.
//
// Only host code lives here: the header compiles under nvcc and under a plain C++20 compiler that
// sees the CUDA runtime and cuBLAS headers (link with -lcudart -lcublas).
#pragma once

#include "siam/backend/cuda_blas.hpp"
#include "siam/backend/cuda_context.hpp"
#include "siam/backend/cuda_device.hpp"
#include "siam/backend/cuda_error.hpp"
#include "siam/backend/cuda_pool.hpp"
#include "siam/backend/cuda_staging.hpp"

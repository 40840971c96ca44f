// How FP32 GEMMs may compute (the names of torch.set_float32_matmul_precision). Inputs and
// outputs stay FP32 tensors in every mode, and so do weights and optimizer state; only the
// GEMMs' inputs are rounded, and products accumulate in FP32:
//   highest  plain FP32, the default
//   high     TF32: inputs rounded to 10 mantissa bits (GPU tensor cores)
//   medium   BF16: inputs rounded to 7 mantissa bits (GPU tensor cores)
// On the GPU the modes pick cuBLAS compute types (cuda_runtime.hpp). On the CPU they are an
// emulation for checking what a mode does to results: the inputs are rounded to nearest
// (ties to even) into scratch copies, then multiplied in FP32 (Cpu::set_matmul_precision).
#pragma once

#include <bit>
#include <cstdint>
#include <string>

#include "siam/error.hpp"

namespace siam {

enum class MatmulPrecision { highest, high, medium };

inline const char* to_string(MatmulPrecision p) noexcept {
  return p == MatmulPrecision::high ? "high" : p == MatmulPrecision::medium ? "medium" : "highest";
}

/// "highest", "high" or "medium"; value_error naming anything else.
inline MatmulPrecision parse_matmul_precision(const std::string& s) {
  if (s == "highest") return MatmulPrecision::highest;
  if (s == "high") return MatmulPrecision::high;
  if (s == "medium") return MatmulPrecision::medium;
  throw value_error("matmul precision '" + s + "': expected highest, high or medium");
}

/// Mantissa bits a mode keeps of an FP32 GEMM input (23: all).
constexpr int mantissa_bits(MatmulPrecision p) noexcept {
  return p == MatmulPrecision::high ? 10 : p == MatmulPrecision::medium ? 7 : 23;
}

/// x rounded to `bits` mantissa bits, to nearest with ties to even; NaN and Inf unchanged
/// (a value that rounds past the largest finite one becomes Inf, as in hardware).
inline float round_mantissa(float x, int bits) noexcept {
  if (bits >= 23) return x;
  auto u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  const int drop = 23 - bits;
  const std::uint32_t lsb = (u >> drop) & 1u;
  u += (std::uint32_t{1} << (drop - 1)) - 1u + lsb;
  u &= ~((std::uint32_t{1} << drop) - 1u);
  return std::bit_cast<float>(u);
}

}  // namespace siam

// Portability macros shared by every header: host/device annotations for code that
// must also run inside CUDA kernels, and OpenMP pragmas that vanish without OpenMP.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SIAM_HD __host__ __device__
#else
#define SIAM_HD
#endif

#define SIAM_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP)
#define SIAM_OMP(x) SIAM_PRAGMA(omp x)
#else
#define SIAM_OMP(x)
#endif

// Elementwise loops read each source at the index they write (evaluation checks that
// no operand overlaps the destination shifted), so iterations never depend on each
// other. Telling the compiler lets it vectorise without runtime alias checks, which it
// gives up on for expressions with many operands.
#if defined(__clang__)
#define SIAM_IVDEP SIAM_PRAGMA(clang loop vectorize(assume_safety))
#elif defined(__GNUC__)
#define SIAM_IVDEP SIAM_PRAGMA(GCC ivdep)
#else
#define SIAM_IVDEP
#endif

namespace siam::detail {

// Math that resolves to the CUDA device intrinsics inside kernels and to <cmath> on the
// host, so one functor serves both backends.
#if defined(__CUDA_ARCH__)
SIAM_HD inline float exp_(float x) {
  return ::expf(x);
}
SIAM_HD inline double exp_(double x) {
  return ::exp(x);
}
SIAM_HD inline float log_(float x) {
  return ::logf(x);
}
SIAM_HD inline double log_(double x) {
  return ::log(x);
}
SIAM_HD inline float sqrt_(float x) {
  return ::sqrtf(x);
}
SIAM_HD inline double sqrt_(double x) {
  return ::sqrt(x);
}
SIAM_HD inline float tanh_(float x) {
  return ::tanhf(x);
}
SIAM_HD inline double tanh_(double x) {
  return ::tanh(x);
}
SIAM_HD inline float log1p_(float x) {
  return ::log1pf(x);
}
SIAM_HD inline double log1p_(double x) {
  return ::log1p(x);
}
SIAM_HD inline float pow_(float x, float p) {
  return ::powf(x, p);
}
SIAM_HD inline double pow_(double x, double p) {
  return ::pow(x, p);
}
SIAM_HD inline float abs_(float x) {
  return ::fabsf(x);
}
SIAM_HD inline double abs_(double x) {
  return ::fabs(x);
}
#else
inline float exp_(float x) {
  return std::exp(x);
}
inline double exp_(double x) {
  return std::exp(x);
}
inline float log_(float x) {
  return std::log(x);
}
inline double log_(double x) {
  return std::log(x);
}
inline float sqrt_(float x) {
  return std::sqrt(x);
}
inline double sqrt_(double x) {
  return std::sqrt(x);
}
inline float tanh_(float x) {
  return std::tanh(x);
}
inline double tanh_(double x) {
  return std::tanh(x);
}
inline float log1p_(float x) {
  return std::log1p(x);
}
inline double log1p_(double x) {
  return std::log1p(x);
}
inline float pow_(float x, float p) {
  return std::pow(x, p);
}
inline double pow_(double x, double p) {
  return std::pow(x, p);
}
inline float abs_(float x) {
  return std::fabs(x);
}
inline double abs_(double x) {
  return std::fabs(x);
}
#endif

}  // namespace siam::detail

// The compiled component's instantiations (include/siam/compiled.hpp lists them).
#define SIAM_COMPILED_DEFINE
#include "siam/compiled.hpp"

SIAM_COMPILED_INSTANTIATIONS(, float, ::siam::Cpu)

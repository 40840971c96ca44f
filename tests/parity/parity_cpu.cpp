// The CPU side of the parity test (host compiler, Eigen).
#include <siam/backend/cpu.hpp>

#include "cases.hpp"

namespace parity {
Outputs run_cpu() {
  return run_all<siam::Cpu>();
}
}  // namespace parity

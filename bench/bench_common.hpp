// Helpers shared by the CPU benchmark programs.
#pragma once

#include <cstdlib>
#include <thread>
#include <vector>

namespace bench {

/// The thread counts to measure: SIAM_BENCH_THREADS="1,2,4" if set, else 1 and all.
inline std::vector<int> thread_counts() {
  std::vector<int> out;
  if (const char* env = std::getenv("SIAM_BENCH_THREADS")) {
    for (const char* p = env; *p;) {
      char* end = nullptr;
      const long n = std::strtol(p, &end, 10);
      if (end == p) break;
      if (n > 0) out.push_back(static_cast<int>(n));
      p = *end ? end + 1 : end;
    }
  }
  if (out.empty()) {
    out.push_back(1);
    const int all = static_cast<int>(std::thread::hardware_concurrency());
    if (all > 1) out.push_back(all);
  }
  return out;
}

}  // namespace bench

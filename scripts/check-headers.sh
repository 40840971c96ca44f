#!/usr/bin/env bash
# Compiles every public header alone (it must include what it uses) and one program that
# instantiates the library's templates, with GCC and Clang, under
#   -Wall -Wextra -Wshadow -Wconversion -Wpedantic -Werror
# so that users building with strict warnings are never stopped by siam's headers.
# Headers of optional components are checked where their dependency is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-std=c++20 -fsyntax-only -Wall -Wextra -Wshadow -Wconversion -Wpedantic -Werror
       -Iinclude -isystem /usr/include/eigen3)
compilers=()
for c in g++ clang++-14 clang++; do
  command -v "$c" >/dev/null && compilers+=("$c")
done
[ ${#compilers[@]} -gt 0 ] || { echo "check-headers: no C++ compiler"; exit 1; }
# the GCC and the first Clang found
pick=("${compilers[0]}")
for c in "${compilers[@]:1}"; do
  case $c in clang*) pick+=("$c"); break ;; esac
done
skip() {  # header that needs something this machine lacks
  case $1 in
    */backend/cuda*.hpp|*/backend/cudnn.hpp|*/parallel/nccl.hpp|*/search/exact_cuda.hpp) return 0 ;;  # nvcc only
    */parallel/mpi.hpp) command -v mpicxx >/dev/null || return 0 ;;
    */io/onnx.hpp) [ -f /usr/include/onnx/onnx_pb.h ] || return 0 ;;
    */backend/conv_dnnl.hpp|*/backend/cpu_gemm_dnnl.hpp) [ -f /usr/include/dnnl.hpp ] || return 0 ;;
    */data/png.hpp) [ -f /usr/include/png.h ] || return 0 ;;
    */search/hnsw.hpp) [ -f /usr/include/hnswlib/hnswlib.h ] || return 0 ;;
    */data/jpeg.hpp) [ -f /usr/include/turbojpeg.h ] || return 0 ;;
  esac
  return 1
}
extra() {  # include paths a header's dependency needs
  case $1 in
    */parallel/mpi.hpp|*/parallel/trainer.hpp|*/parallel/data_parallel.hpp) mpicxx --showme:compile 2>/dev/null ;;
    */io/onnx.hpp) echo -DONNX_NAMESPACE=onnx -DONNX_ML=1 ;;  # what libonnx's CMake target sets
  esac
}
export -f skip extra
headers=()
for h in $(find include/siam -name '*.hpp' | sort); do
  skip "$h" || headers+=("$h")
done
status=0
for cxx in "${pick[@]}"; do
  echo "check-headers: $cxx, ${#headers[@]} headers alone"
  printf '%s\n' "${headers[@]}" | xargs -P "${SIAM_JOBS:-2}" -I{} bash -c '
    h={}; inc=${h#include/}
    echo "#include <$inc>" | '"$cxx"' '"${flags[*]}"' $(extra "$h") -x c++ - 2>&1 |
      sed "s|^|  $h: |" | head -20
    exit ${PIPESTATUS[1]}' || status=1
  echo "check-headers: $cxx, templates instantiated (tests/downstream/main.cpp)"
  "$cxx" "${flags[@]}" tests/downstream/main.cpp || status=1
  echo "check-headers: $cxx, every member of the compiled component's types (src/compiled.cpp)"
  "$cxx" "${flags[@]}" src/compiled.cpp || status=1
done
[ $status -eq 0 ] && echo "check-headers: clean" || echo "check-headers: warnings above"
exit $status

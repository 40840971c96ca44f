#!/usr/bin/env bash
# Builds everything and runs the whole test suite, in the configurations CI checks:
#   release    every target (CUDA when the toolkit is found), all tests
#   mutants    small bugs planted one at a time in a copy of the sources; the tests must fail
#   openblas   the core tests with Eigen's GEMM routed to OpenBLAS (EIGEN_USE_BLAS)
#   eigen      the GEMM tests with Eigen's own product (release uses oneDNN when installed)
#   sanitize   Debug + AddressSanitizer/UndefinedBehaviorSanitizer, the CPU tests
#   headers    every header alone and the templates instantiated, under -Wall -Wextra
#              -Wshadow -Wconversion -Wpedantic -Werror with GCC and Clang
#   package    cmake --install, then a downstream project via find_package, one via
#              add_subdirectory, and a plain compile with only include paths
#   valgrind   a short mnist_siamese run under memcheck
#   fuzz       the IDX reader, the archive and the safetensors decoders under libFuzzer, 40 s each
# Installs its own Debian dependencies first. Build trees go under build/ci/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=${SIAM_JOBS:-2}
root=build/ci
start=$SECONDS
section() { printf '\n==== %s (%ds)\n' "$*" $((SECONDS - start)); }

section "release: configure, build, test"
cmake -S . -B $root/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build $root/release -j"$jobs"
ctest --test-dir $root/release --output-on-failure -j"$jobs"

section "mutants: planted bugs, each caught by the tests (scripts/mutants.sh)"
scripts/mutants.sh $root/mutants

section "openblas: core tests with EIGEN_USE_BLAS"
cmake -S . -B $root/openblas -DCMAKE_BUILD_TYPE=Release -DSIAM_BLAS=openblas -DSIAM_CUDA=OFF \
  -DSIAM_BUILD_EXAMPLES=OFF -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $root/openblas -j"$jobs" --target test_expr test_autodiff test_nn test_conv test_gemm
ctest --test-dir $root/openblas --output-on-failure -R '^test_(expr|autodiff|nn|conv|gemm)$'

section "eigen: the float GEMM tests with Eigen's own product (the fallback provider)"
cmake -S . -B $root/eigen -DCMAKE_BUILD_TYPE=Release -DSIAM_BLAS=eigen -DSIAM_CUDA=OFF \
  -DSIAM_BUILD_EXAMPLES=OFF -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $root/eigen -j"$jobs" --target test_gemm
ctest --test-dir $root/eigen --output-on-failure -R '^test_gemm$'

section "sanitize: Debug + ASan/UBSan"
cmake -S . -B $root/sanitize -DCMAKE_BUILD_TYPE=Debug -DSIAM_SANITIZE=address,undefined \
  -DSIAM_CUDA=OFF -DSIAM_BUILD_EXAMPLES=OFF -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $root/sanitize -j"$jobs" --target test_expr test_autodiff test_ops test_losses \
  test_nn test_optim test_train test_data test_metrics test_safetensors test_png test_conv
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir $root/sanitize --output-on-failure -j"$jobs" \
  -R '^test_(expr|autodiff|ops|losses|nn|optim|train|data|metrics|safetensors|png|conv)$'

section "headers: each alone, and instantiated, warning-free with GCC and Clang"
scripts/check-headers.sh

section "layers: no include from a lower layer to a higher one (compiler -MM)"
scripts/check-layers.sh

section "package: install, find_package, add_subdirectory, plain compile"
rm -rf $root/prefix $root/down-pkg $root/down-sub $root/down-comp
cmake --install $root/release --prefix "$PWD/$root/prefix" >/dev/null
# README's snippet: find_package(siam CONFIG REQUIRED), then siam::onnx and siam::png used
cmake -S tests/downstream -B $root/down-pkg -DCMAKE_PREFIX_PATH="$PWD/$root/prefix" >/dev/null
cmake --build $root/down-pkg -j"$jobs"
$root/down-pkg/downstream | tee $root/down-pkg/out.txt
if grep skipped $root/down-pkg/out.txt; then
  echo "package: the installed siam lacks siam::onnx or siam::png"; exit 1
fi
# COMPONENTS onnx png jpeg hnsw resolve; an unknown or unavailable component fails, saying why
cmake -S tests/downstream -B $root/down-comp -DCMAKE_PREFIX_PATH="$PWD/$root/prefix" \
  -DSIAM_DOWNSTREAM_COMPONENTS="onnx;png;jpeg;hnsw" >/dev/null
comp_fails() {  # COMPONENTS, the message expected, more cmake arguments
  rm -rf $root/down-comp
  if cmake -S tests/downstream -B $root/down-comp -DCMAKE_PREFIX_PATH="$PWD/$root/prefix" \
    -DSIAM_DOWNSTREAM_COMPONENTS="$1" "${@:3}" >$root/down-comp.log 2>&1 ||
    ! grep -q "$2" $root/down-comp.log; then
    cat $root/down-comp.log; echo "package: COMPONENTS $1 should fail saying '$2'"; exit 1
  fi
}
comp_fails "onnx;nosuch" "no component 'nosuch'"
comp_fails "onnx;png" "png: libpng not found" -DCMAKE_DISABLE_FIND_PACKAGE_PNG=ON
cmake -S tests/downstream -B $root/down-sub -DSIAM_SOURCE_DIR="$PWD" >/dev/null
cmake --build $root/down-sub -j"$jobs" && $root/down-sub/downstream
c++ -std=c++20 -O1 -I"$PWD/$root/prefix/include" -I/usr/include/eigen3 \
  tests/downstream/main.cpp -lz -o $root/plain-compile && $root/plain-compile

section "valgrind: a short end-to-end run under memcheck (no -march=native: no AVX-512)"
# Eigen's GEMM: memcheck reports invalid stack reads inside oneDNN's JIT-generated kernels.
cmake -S . -B $root/valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIAM_NATIVE=OFF -DSIAM_CUDA=OFF \
  -DSIAM_BLAS=eigen \
  -DSIAM_BUILD_TESTS=OFF -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $root/valgrind -j"$jobs" --target mnist_siamese
rm -rf $root/valgrind-out
valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --suppressions=tests/valgrind.supp \
  $root/valgrind/examples/mnist_siamese/mnist_siamese --train-size 100 --test-size 20 \
  --batch-pairs 10 --iterations 3 --eval-every 3 --threads 1 --out $root/valgrind-out >/dev/null

section "fuzz: IDX reader, archive and safetensors decoders under libFuzzer + ASan/UBSan"
scripts/fuzz.sh "${SIAM_FUZZ_SECONDS:-40}"  # 3 targets, 2 minutes in all

section "dist: the data-parallel helper without MPI, under ASan/UBSan"
# (The MPI tests, test_dist_mpi_np1/2/3 and test_dist_cli, run in the release section.)
cmake -S . -B $root/dist-nompi -DCMAKE_BUILD_TYPE=Debug -DSIAM_MPI=OFF -DSIAM_CUDA=OFF \
  -DSIAM_SANITIZE=address,undefined -DSIAM_BUILD_EXAMPLES=OFF -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build $root/dist-nompi -j"$jobs" --target test_dist
ctest --test-dir $root/dist-nompi --output-on-failure -R '^test_dist'

section "all tests passed"

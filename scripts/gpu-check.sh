#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU: the GPU tests (runtime, backend parity),
# the GPU benchmarks, and a full 3000-iteration mnist_siamese --device gpu run on the
# synthetic digits, then a short summary. Meant to finish in well under 5 minutes.
#
#   scripts/gpu-check.sh BUNDLE   run prebuilt binaries made by scripts/gpu-bundle.sh on a
#                                 CUDA-toolkit machine (no Debian packages needed here)
#   scripts/gpu-check.sh          configure and build (Release, SIAM_CUDA=ON) first; needs
#                                 the build dependencies (scripts/install-deps.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${GPU_CHECK_OUT:-build/gpu-check}
mkdir -p "$out"
if [ $# -ge 1 ]; then
  bin=$(cd "$1" && pwd)
  export LD_LIBRARY_PATH="$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [ -d "$bin/plplot" ]; then
    export PLPLOT_DRV_DIR="$bin/plplot/drivers" PLPLOT_LIB="$bin/plplot/data"
    export FONTCONFIG_FILE="$bin/fonts/fonts.conf"
  fi
  runtime=$bin/test_cuda_runtime parity=$bin/test_parity bench=$bin/bench_gpu ex=$bin/mnist_siamese
else
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSIAM_CUDA=ON >/dev/null &&
    cmake --build build/gpu -j"$(nproc)" --target test_cuda_runtime test_parity bench_gpu mnist_siamese ||
    exit 1
  runtime=build/gpu/tests/test_cuda_runtime parity=build/gpu/tests/test_parity
  bench=build/gpu/bench_gpu ex=build/gpu/examples/mnist_siamese/mnist_siamese
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
status=0
"$runtime" >"$out/runtime.log" 2>&1 || status=1
"$parity" >"$out/parity.log" 2>&1 || status=1
"$bench" --benchmark_out="$out/bench_gpu.json" --benchmark_out_format=json >"$out/bench.log" 2>&1 || status=1
start=$(date +%s%N)
"$ex" --device gpu --out "$out/example" >"$out/example.log" 2>&1 || status=1
end=$(date +%s%N)

echo "---- summary"
tail -n 3 "$out/runtime.log" | head -n 1 | sed 's/^/runtime tests: /'
grep -E "test cases" "$out/parity.log" | sed 's/^/parity tests:  /'
grep -c " ok$" "$out/parity.log" | sed 's/^/parity cases ok: /'
grep -E "FAIL" "$out/parity.log" | head
grep -E "^BM_(GpuTrainStep|GpuEmbed5000)" "$out/bench.log"
grep -E "^BM_CublasGemm" "$out/bench.log" | awk '{print $1, $2, $3, $NF, $(NF-1)}'
grep -E "ms/iteration|per iteration|kNN|precision" "$out/example.log" | head -6
echo "mnist_siamese --device gpu, 3000 iterations, data to plots: $(((end - start) / 1000000)) ms wall"
ls "$out/example" | tr '\n' ' ' && echo
exit $status

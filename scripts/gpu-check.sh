#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU: the GPU tests (runtime, backend, backend
# parity), the same tests under compute-sanitizer (memcheck, racecheck, initcheck,
# synccheck; any report fails the check), the GPU benchmarks (the step eager and as one CUDA
# graph, in FP32, TF32 and BF16), full 3000-iteration mnist_siamese --device gpu runs on the
# synthetic digits (eager and --graph), PyTorch's same step on this GPU, then a short summary.
#   GPU_CHECK_SANITIZE=0        skip the sanitizer runs (they take the longest)
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
  runtime=$bin/test_cuda_runtime backend=$bin/test_cuda_backend parity=$bin/test_parity
  bench=$bin/bench_gpu ex=$bin/mnist_siamese
else
  cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSIAM_CUDA=ON >/dev/null &&
    cmake --build build/gpu -j"$(nproc)" --target test_cuda_runtime test_cuda_backend test_parity \
      bench_gpu mnist_siamese ||
    exit 1
  runtime=build/gpu/tests/test_cuda_runtime backend=build/gpu/tests/test_cuda_backend
  parity=build/gpu/tests/test_parity
  bench=build/gpu/bench_gpu ex=build/gpu/examples/mnist_siamese/mnist_siamese
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
status=0
"$runtime" >"$out/runtime.log" 2>&1 || status=1
"$backend" >"$out/backend.log" 2>&1 || status=1
"$parity" >"$out/parity.log" 2>&1 || status=1
# The debug mode: a synchronisation and a check after every launch.
SIAM_CUDA_SYNC_CHECK=1 "$parity" >"$out/parity-sync-check.log" 2>&1 || status=1

# compute-sanitizer: every tool on every test program, failing on any report. Left out:
# the planted fault (a deliberate illegal address, in a child process) and the > 2^31
# element case (tens of GiB: too slow and too large under the tools' shadow memory).
sanitizer=$(command -v compute-sanitizer || true)
[ -z "$sanitizer" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
[ -z "$sanitizer" ] && [ -n "${bin:-}" ] && [ -x "$bin/compute-sanitizer/compute-sanitizer" ] &&
  sanitizer=$bin/compute-sanitizer/compute-sanitizer
sanitized="not run"
rm -f "$out"/sanitize-*.log
if [ "${GPU_CHECK_SANITIZE:-1}" != 0 ]; then
  if [ -z "$sanitizer" ]; then
    sanitized="FAILED: compute-sanitizer not found (set GPU_CHECK_SANITIZE=0 to skip)"
    status=1
  else
    sanitized="clean"
    for tool in memcheck racecheck initcheck synccheck; do
      for prog in "$runtime" "$backend" "$parity"; do
        log="$out/sanitize-$tool-$(basename "$prog").log"
        timeout 300 "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 20 \
          --target-processes application-only \
          "$prog" --test-case-exclude='*planted*,*2^31*' >"$log" 2>&1
        rc=$?
        if [ $rc -ne 0 ] || ! grep -q "ERROR SUMMARY: 0 errors" "$log"; then
          sanitized="FAILED (see $out/sanitize-*.log)"
          status=1
          echo "sanitizer: $tool on $(basename "$prog"): exit $rc" >>"$out/sanitize-summary.log"
        fi
      done
    done
  fi
fi
"$bench" --benchmark_out="$out/bench_gpu.json" --benchmark_out_format=json >"$out/bench.log" 2>&1 || status=1
start=$(date +%s%N)
"$ex" --device gpu --out "$out/example" >"$out/example.log" 2>&1 || status=1
end=$(date +%s%N)
"$ex" --device gpu --graph --out "$out/example-graph" >"$out/example-graph.log" 2>&1 || status=1
end_graph=$(date +%s%N)
# The same step in PyTorch on this GPU (eager, CUDA graph, torch.compile; FP32, TF32, BF16),
# when this machine's python3 has torch with CUDA.
python3 bench/pytorch_gpu_step.py >"$out/pytorch_gpu.jsonl" 2>"$out/pytorch_gpu.log" ||
  echo "pytorch_gpu_step.py: exit $? (see $out/pytorch_gpu.log)" >>"$out/pytorch_gpu.log"

echo "---- summary"
tail -n 3 "$out/runtime.log" | head -n 1 | sed 's/^/runtime tests: /'
grep -E "test cases" "$out/backend.log" | sed 's/^/backend tests: /'
echo "compute-sanitizer (memcheck, racecheck, initcheck, synccheck): $sanitized"
[ -f "$out/sanitize-summary.log" ] && cat "$out/sanitize-summary.log"
grep -E "test cases" "$out/parity.log" | sed 's/^/parity tests:  /'
grep -E "test cases" "$out/parity-sync-check.log" | sed 's/^/parity tests, SIAM_CUDA_SYNC_CHECK=1: /'
grep -c " ok$" "$out/parity.log" | sed 's/^/parity cases ok: /'
grep -E "FAIL" "$out/parity.log" | head
grep -E "^BM_(GpuTrainStep|GpuEmbed5000|PoolAllocFree|Upload)" "$out/bench.log"
grep -E "^BM_CublasGemm" "$out/bench.log" | awk '{print $1, $2, $3, $NF, $(NF-1)}'
grep -E "ms/iteration|per iteration|kNN|precision" "$out/example.log" | head -6
echo "mnist_siamese --device gpu, 3000 iterations, data to plots: $(((end - start) / 1000000)) ms wall"
echo "mnist_siamese --device gpu --graph, the same: $(((end_graph - end) / 1000000)) ms wall"
grep -E "kNN|precision" "$out/example-graph.log" | head -2
cat "$out/pytorch_gpu.jsonl" 2>/dev/null
ls "$out/example" | tr '\n' ' ' && echo
exit $status

#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU: the GPU tests (runtime, backend, backend
# parity), the same tests under compute-sanitizer (memcheck, racecheck, initcheck,
# synccheck; any report fails the check), the GPU benchmarks (the step eager and as one CUDA
# graph, in FP32, TF32 and BF16), full 3000-iteration mnist_siamese --device gpu runs on the
# synthetic digits (eager and --graph), PyTorch's same step on this GPU, then a short summary.
#   GPU_CHECK_SANITIZE=0        skip the sanitizer runs (they take the longest)
#   SIAM_MNIST_DIR=DIR          run the examples on MNIST (else on the synthetic digits)
#   GPU_CHECK_SEEDS="0 1 2"     seeds of the FP32 / BF16 quality comparison
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

# compute-sanitizer: every tool on every test program, failing on any report. Left out: the
# tests that make CUDA errors on purpose (doctest suite "cuda-errors": the rejected launch,
# the 1 PiB allocation, the planted fault, cudaMemcpy(nullptr)), which every tool would
# report, and the > 2^31 element case (tens of GiB under the tools' shadow memory).
# SIAM_SANITIZER=1 makes the tests use fewer steps and threads under the tools. memcheck,
# initcheck and synccheck end with "ERROR SUMMARY: N errors", racecheck with
# "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)".
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
        SIAM_SANITIZER=1 timeout 300 "$sanitizer" --tool "$tool" --error-exitcode 99 \
          --print-limit 20 --target-processes application-only \
          "$prog" --test-suite-exclude=cuda-errors --test-case-exclude='*planted*,*2^31*' \
          >"$log" 2>&1
        rc=$?
        if [ "$tool" = racecheck ]; then
          clean='RACECHECK SUMMARY: [0-9]+ hazards? displayed \(0 errors'
        else
          clean='ERROR SUMMARY: 0 errors'
        fi
        line=$(grep -E "(RACECHECK|ERROR) SUMMARY" "$log" | tail -n 1)
        echo "sanitizer: $tool on $(basename "$prog"): exit $rc: ${line:-no summary line}" \
          >>"$out/sanitize-summary.log"
        if [ $rc -ne 0 ] || ! grep -qE "$clean" "$log"; then
          [ $rc -eq 124 ] && echo "  (timed out after 300 s)" >>"$out/sanitize-summary.log"
          sanitized="FAILED (see $out/sanitize-*.log)"
          status=1
        fi
      done
    done
  fi
fi
"$bench" --benchmark_out="$out/bench_gpu.json" --benchmark_out_format=json >"$out/bench.log" 2>&1 || status=1
data=()
[ -n "${SIAM_MNIST_DIR:-}" ] && data=(--data "$SIAM_MNIST_DIR")
start=$(date +%s%N)
"$ex" --device gpu "${data[@]}" --out "$out/example" >"$out/example.log" 2>&1 || status=1
end=$(date +%s%N)
"$ex" --device gpu --graph "${data[@]}" --out "$out/example-graph" >"$out/example-graph.log" 2>&1 ||
  status=1
end_graph=$(date +%s%N)
echo "eager_ms=$(((end - start) / 1000000)) graph_ms=$(((end_graph - end) / 1000000))" >"$out/times.txt"
# BF16 against FP32 quality, same seeds.
for seed in ${GPU_CHECK_SEEDS:-0 1 2}; do
  for p in highest medium; do
    "$ex" --device gpu "${data[@]}" --seed "$seed" --matmul-precision "$p" \
      --out "$out/example-$p-$seed" >"$out/example-$p-$seed.log" 2>&1 || status=1
  done
done
# The same steps in PyTorch on this GPU (eager, CUDA graph, torch.compile; FP32, TF32, BF16;
# the MLP and LeNet), when this machine's python3 has torch with CUDA.
python3 bench/pytorch_gpu_step.py >"$out/pytorch_gpu.jsonl" 2>"$out/pytorch_gpu.log" ||
  echo "pytorch_gpu_step.py: exit $? (see $out/pytorch_gpu.log)" >>"$out/pytorch_gpu.log"
python3 bench/pytorch_gpu_step.py --net lenet >"$out/pytorch_lenet.jsonl" 2>>"$out/pytorch_gpu.log" ||
  echo "pytorch_gpu_step.py --net lenet: exit $?" >>"$out/pytorch_gpu.log"

echo "---- summary"
tail -n 3 "$out/runtime.log" | head -n 1 | sed 's/^/runtime tests: /'
grep -E "test cases" "$out/backend.log" | sed 's/^/backend tests: /'
echo "compute-sanitizer (memcheck, racecheck, initcheck, synccheck): $sanitized"
[ -f "$out/sanitize-summary.log" ] && cat "$out/sanitize-summary.log"
grep -E "test cases" "$out/parity.log" | sed 's/^/parity tests:  /'
grep -E "test cases" "$out/parity-sync-check.log" | sed 's/^/parity tests, SIAM_CUDA_SYNC_CHECK=1: /'
grep -c " ok$" "$out/parity.log" | sed 's/^/parity cases ok: /'
grep -E "FAIL" "$out/parity.log" | head
grep -E "^BM_(GpuTrainStep.*median|GpuEmbed5000|PoolAllocFree|Upload)" "$out/bench.log"
grep -E "^BM_CublasGemm" "$out/bench.log" | awk '{print $1, $2, $3, $NF, $(NF-1)}'
grep -E "ms/iteration|per iteration|kNN|precision" "$out/example.log" | head -6
echo "mnist_siamese --device gpu, 3000 iterations, data to plots: $(((end - start) / 1000000)) ms wall"
echo "mnist_siamese --device gpu --graph, the same: $(((end_graph - end) / 1000000)) ms wall"
grep -E "kNN|precision" "$out/example-graph.log" | head -2
cat "$out/pytorch_gpu.jsonl" "$out/pytorch_lenet.jsonl" 2>/dev/null
ls "$out/example" | tr '\n' ' ' && echo
echo "---- targets (issue: make every GPU claim true on the H200)"
python3 - "$out" "$status" <<'PY' || true  # targets are reported, not part of the exit status
import json, re, sys, glob, os
out, status = sys.argv[1], int(sys.argv[2])
ok_all = True
def target(name, figure, ok):
    global ok_all
    ok_all = ok_all and ok is True
    verdict = "MET" if ok is True else ("NOT MET" if ok is False else "NOT MEASURED")
    print(f"{verdict:13s} {name}: {figure}")
# siam's steps: medians of BM_GpuTrainStep (ms per step)
steps = {}
try:
    for b in json.load(open(f"{out}/bench_gpu.json"))["benchmarks"]:
        if b.get("aggregate_name") != "median" or not b["run_name"].startswith("BM_GpuTrainStep"):
            continue
        a = dict(re.findall(r"(\w+):(\d+)", b["run_name"]))
        key = (int(a["lenet"]), int(a["graph"]), int(a["precision"]), int(a["check_finite"]))
        steps[key] = b["step_ms"]
except (OSError, ValueError, KeyError) as e:
    print(f"bench_gpu.json unreadable: {e}")
def torch_best(path, precision):
    best = None
    try:
        for line in open(path):
            r = json.loads(line)
            if r.get("precision") == precision and "ms_per_step" in r:
                best = r["ms_per_step"] if best is None else min(best, r["ms_per_step"])
    except (OSError, ValueError):
        pass
    return best
names = {0: "FP32", 1: "TF32", 2: "BF16"}
for prec, limit in ((0, 0.20), (1, 0.12)):
    for probe in (1, 0):
        ms = steps.get((0, 1, prec, probe))
        target(f"{names[prec]} graph step (MLP, NaN probe {'on' if probe else 'off'}) <= {limit} ms",
               f"{ms:.3f} ms" if ms else "no figure", None if ms is None else ms <= limit)
    ms = steps.get((0, 1, prec, 1))
    pt = torch_best(f"{out}/pytorch_gpu.jsonl", ["highest", "high"][prec])
    ms = round(ms, 4) if ms else ms
    target(f"{names[prec]} graph step <= 0.5x PyTorch's best (eager/graph/compile)",
           f"siam {ms} ms, PyTorch {pt} ms" + (f", ratio {ms / pt:.2f}" if ms and pt else ""),
           None if not (ms and pt) else ms <= 0.5 * pt)
ms = min([v for (l, g, p, c), v in steps.items() if l == 1 and p == 0] or [0]) or None
ms = round(ms, 4) if ms else ms
pt = torch_best(f"{out}/pytorch_lenet.jsonl", "highest")
target("LeNet step (FP32, best of eager/graph) <= 0.6x PyTorch's best",
       f"siam {ms} ms, PyTorch {pt} ms" + (f", ratio {ms / pt:.2f}" if ms and pt else ""),
       None if not (ms and pt) else ms <= 0.6 * pt)
for k, v in sorted(steps.items()):
    print(f"    step_ms {'lenet' if k[0] else 'mlp'} {'graph' if k[1] else 'eager'} "
          f"{names[k[2]]} probe={k[3]}: {v:.4f}")
def quality(log):
    try:
        t = open(log).read()
    except OSError:
        return None
    k = re.search(r"k=5 ([0-9.]+)%", t)
    p = re.search(r"precision@9[^:]*: ([0-9.]+)%", t)
    return (float(k.group(1)) / 100, float(p.group(1)) / 100) if k and p else None
qe, qg = quality(f"{out}/example.log"), quality(f"{out}/example-graph.log")
target("--graph quality within 0.005 of eager (kNN5, P@9)", f"eager {qe}, graph {qg}",
       None if not (qe and qg) else all(abs(a - b) <= 0.005 for a, b in zip(qe, qg)))
times = dict(re.findall(r"(\w+)=(\d+)", open(f"{out}/times.txt").read())) if os.path.exists(f"{out}/times.txt") else {}
g = int(times["graph_ms"]) if "graph_ms" in times else None
target("--graph 3000 iterations, data to plots, < 2 s", f"{g} ms wall (eager {times.get('eager_ms')} ms)",
       None if g is None else g < 2000)
diffs = []
for f in sorted(glob.glob(f"{out}/example-highest-*.log")):
    seed = f.rsplit("-", 1)[1][:-4]
    a, b = quality(f), quality(f"{out}/example-medium-{seed}.log")
    if a and b:
        diffs.append(max(abs(x - y) for x, y in zip(a, b)))
        print(f"    seed {seed}: FP32 {a}, BF16 {b}")
target("BF16 quality within 0.01 of FP32 (kNN5, P@9; every seed)",
       f"largest difference {max(diffs):.4f} over {len(diffs)} seeds" if diffs else "no figure",
       None if not diffs else max(diffs) <= 0.01)
target("every GPU test passes, every sanitizer tool reports 0 errors and finishes",
       "check exit status so far " + str(status), status == 0)
print("data:", "MNIST" if os.environ.get("SIAM_MNIST_DIR") else "synthetic digits (set SIAM_MNIST_DIR for MNIST)")
sys.exit(0 if ok_all else 1)
PY
exit $status

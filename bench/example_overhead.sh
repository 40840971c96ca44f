#!/usr/bin/env bash
# The example's whole default run against 3000 times the training step measured by
# bench_train (BM_TrainStep with the NaN/Inf probe on, as in the example), alternating in
# one run, and where the difference goes:
#   in the loop   the example's training seconds (around trainer.step() only) minus
#                 iterations x the benchmark's step;
#   evaluation    the default run (--eval-every 100) minus a run that evaluates only at
#                 the start and the end (--eval-every = iterations);
#   the rest      start-up (loading, building), the final evaluation, figures, files.
# Builds nothing.
#
#   bench/example_overhead.sh BUILD_DIR [DATA_DIR]
#
# BUILD_DIR holds bench/bench_train and examples/mnist_siamese/mnist_siamese; DATA_DIR is
# passed as --data (default: the synthetic digits). Environment: ROUNDS (2), THREADS (2).
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [DATA_DIR]}
data=${2:-}
rounds=${ROUNDS:-2}
threads=${THREADS:-2}
train=$build/bench/bench_train
ex=$build/examples/mnist_siamese/mnist_siamese
for p in "$train" "$ex"; do
  [[ -x $p ]] || { echo "example_overhead.sh: $p is not an executable" >&2; exit 1; }
done
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=${PYTHON:-python3}
data_args=()
[[ -n $data ]] && data_args=(--data "$data")

step_ms() {
  "$train" --benchmark_filter="^BM_TrainStep/threads:${threads}/check_finite:1/" \
    --benchmark_format=json >"$tmp/step.json" 2>/dev/null
  "$py" -c 'import json,sys; b=json.load(open(sys.argv[1]))["benchmarks"][0]; print("%.4f" % b["step_ms"])' "$tmp/step.json"
}
example() {  # $1: --eval-every; prints "wall training iterations"
  rm -rf "$tmp/out"
  "$ex" "${data_args[@]}" --threads "$threads" --eval-every "$1" --out "$tmp/out" >/dev/null
  "$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["wall_seconds"], m["training_seconds"], m["iterations_this_run"])' "$tmp/out/metrics.json"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for ((r = 1; r <= rounds; r++)); do
  s1=$(step_ms)
  read -r wall training iters < <(example 100)
  read -r wall_once training_once _ < <(example "$iters")
  s2=$(step_ms)
  echo "round $r: step $s1 / $s2 ms; default run wall $wall s (training $training s); evaluating only at the ends: wall $wall_once s"
  rows+=("$s1 $s2 $wall $training $wall_once $iters $training_once")
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${rows[@]}" | "$py" -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
step = statistics.median([r[0] for r in rows] + [r[1] for r in rows]) / 1e3
wall, training, once, iters, training_once = med(2), med(3), med(4), med(5), med(6)
base = iters * step
print(f"median step {step * 1e3:.3f} ms; {iters:.0f} x step = {base:.2f} s")
print(f"default run: wall {wall:.2f} s = {wall / base:.3f} x ({iters:.0f} x step)")
print(f"  in the training loop (sampling, probe, bookkeeping): {training - base:+.2f} s ({training / base:.3f} x)")
print(f"  evaluation every 100 iterations:                    {wall - once:+.2f} s")
print(f"  start-up, final evaluation, figures, files:         {once - training_once:+.2f} s")
'

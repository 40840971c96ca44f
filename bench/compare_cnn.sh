#!/usr/bin/env bash
# The LeNet Siamese training step: siam (bench_conv's step/<engine>) against PyTorch
# (bench/pytorch_cnn.py time) at its best on the CPU: tcmalloc through LD_PRELOAD and the
# OpenMP OpenBLAS first on the library path (its convolutions run on its own oneDNN). Run
# alternately, so that machine noise hits both alike; prints every round, the medians and
# the ratios siam / PyTorch. Builds nothing.
#
#   bench/compare_cnn.sh BUILD_DIR/bench/bench_conv [ROUNDS]
#
# Environment: THREADS (2), STEPS / WARMUP (PyTorch: 60 / 10), PYTHON (/usr/bin/python3).
set -euo pipefail

conv=${1:?usage: $0 path/to/bench_conv [rounds]}
rounds=${2:-${ROUNDS:-3}}
threads=${THREADS:-2}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
[[ -x $conv ]] || { echo "compare_cnn.sh: $conv is not an executable" >&2; exit 1; }
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

omp_dir=$(dpkg -L libopenblas0-openmp 2>/dev/null | grep -E '/libopenblas\.so\.0$' | head -n1 | xargs -r dirname || true)
tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / {print $NF; exit}' || true)
[[ -n $tcmalloc ]] || echo "compare_cnn.sh: tcmalloc not found (libtcmalloc-minimal4): PyTorch runs with glibc malloc" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
engines=$(SIAM_BENCH_THREADS=$threads "$conv" --benchmark_list_tests --benchmark_filter="^step/.*/threads:${threads}/real_time\$" | sed 's|^step/||; s|/.*||')

siam_ms() {  # $1: engine; mean real time per step, ms
  SIAM_BENCH_THREADS=$threads "$conv" --benchmark_filter="^step/$1/threads:${threads}/real_time\$" \
    --benchmark_min_time=2 --benchmark_format=json >"$tmp/siam.json" 2>/dev/null
  "$py" -c 'import json,sys; b=[b for b in json.load(open(sys.argv[1]))["benchmarks"]][0]; print("%.2f" % (b["real_time"] * {"ns":1e-6,"us":1e-3,"ms":1,"s":1e3}[b["time_unit"]]))' "$tmp/siam.json"
}
torch_ms() {
  LD_PRELOAD=$tcmalloc LD_LIBRARY_PATH="${omp_dir}${omp_dir:+:}${LD_LIBRARY_PATH:-}" \
    "$py" "$here/pytorch_cnn.py" time --threads "$threads" --steps "${STEPS:-60}" \
    --warmup "${WARMUP:-10}" >"$tmp/torch.json"
  "$py" -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["ms_per_step"])' "$tmp/torch.json"
}

echo "siam: $conv (engines: $(echo $engines)); pytorch: tcmalloc=${tcmalloc:-none}, openblas=${omp_dir:-default}, threads $threads"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A res
for ((r = 1; r <= rounds; r++)); do
  line="round $r:"
  for e in $engines; do
    s=$(siam_ms "$e"); res[$e]+=" $s"; line+=" siam[$e] $s ms,"
  done
  t=$(torch_ms); res[torch]+=" $t"; line+=" pytorch $t ms"
  echo "$line"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
args=()
for k in "${!res[@]}"; do args+=("$k=${res[$k]}"); done
"$py" - "${args[@]}" <<'PY'
import statistics, sys
runs = dict(a.split("=", 1) for a in sys.argv[1:])
med = {k: statistics.median(float(x) for x in v.split()) for k, v in runs.items()}
for k in sorted(med):
    print(f"median {k}: {med[k]:.2f} ms/step")
for k in sorted(med):
    if k != "torch":
        print(f"ratio siam[{k}] / pytorch: {med[k] / med['torch']:.2f}  (< 1: siam is faster)")
PY

#!/usr/bin/env bash
# The ResNet Siamese training step (`mnist_siamese --arch resnet`): siam (bench_resnet's
# resnet_step/<engine>) against PyTorch (bench/pytorch_resnet.py time) at its best on the
# CPU: tcmalloc through LD_PRELOAD and the OpenMP OpenBLAS first on the library path (its
# convolutions run on its own oneDNN). Run alternately, so that machine noise hits both
# alike; prints every round, the load average, the medians and the ratios siam / PyTorch of
# wall time and of process CPU time (every thread; on a loaded machine the wall time mostly
# measures the other processes).
# Builds nothing.
#
#   bench/compare_resnet.sh BUILD_DIR/bench/bench_resnet [ROUNDS]
#
# Environment: THREADS (2), PAIRS (180, the example's batch: 360 images; a step then takes
# seconds on 2 cores, so fewer pairs give quicker rounds), STEPS / WARMUP (PyTorch: 5 / 2),
# PYTHON (/usr/bin/python3).
set -euo pipefail

bin=${1:?usage: $0 path/to/bench_resnet [rounds]}
rounds=${2:-${ROUNDS:-3}}
threads=${THREADS:-2}
pairs=${PAIRS:-180}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
[[ -x $bin ]] || { echo "compare_resnet.sh: $bin is not an executable" >&2; exit 1; }
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

omp_dir=$(dpkg -L libopenblas0-openmp 2>/dev/null | grep -E '/libopenblas\.so\.0$' | head -n1 | xargs -r dirname || true)
tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / {print $NF; exit}' || true)
[[ -n $tcmalloc ]] || echo "compare_resnet.sh: tcmalloc not found (libtcmalloc-minimal4): PyTorch runs with glibc malloc" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
engines=$(SIAM_BENCH_THREADS=$threads "$bin" --benchmark_list_tests --benchmark_filter="^resnet_step/.*/threads:${threads}/process_time/real_time\$" | sed 's|^resnet_step/||; s|/.*||')

siam_ms() {  # $1: engine; mean real time per step, ms
  SIAM_BENCH_PAIRS=$pairs SIAM_BENCH_THREADS=$threads "$bin" \
    --benchmark_filter="^resnet_step/$1/threads:${threads}/process_time/real_time\$" \
    --benchmark_min_time=1 --benchmark_format=json >"$tmp/siam.json" 2>/dev/null
  "$py" -c 'import json,sys; b=json.load(open(sys.argv[1]))["benchmarks"][0]; u={"ns":1e-6,"us":1e-3,"ms":1,"s":1e3}[b["time_unit"]]; print("%.1f %.1f %g" % (b["real_time"] * u, b["cpu_time"] * u, b["allocs"]))' "$tmp/siam.json"
}
torch_ms() {
  LD_PRELOAD=$tcmalloc LD_LIBRARY_PATH="${omp_dir}${omp_dir:+:}${LD_LIBRARY_PATH:-}" \
    "$py" "$here/pytorch_resnet.py" time --threads "$threads" --pairs "$pairs" \
    --steps "${STEPS:-5}" --warmup "${WARMUP:-2}" >"$tmp/torch.json"
  "$py" -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f %.1f" % (j["ms_per_step"], j["cpu_ms_per_step"]))' "$tmp/torch.json"
}

echo "siam: $bin (engines: $(echo $engines)); pytorch: tcmalloc=${tcmalloc:-none}, openblas=${omp_dir:-default}, threads $threads, pairs $pairs ($((2 * pairs)) images)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A res cpu
for ((r = 1; r <= rounds; r++)); do
  line="round $r:"
  for e in $engines; do
    read -r s c allocs <<<"$(siam_ms "$e")"
    res[$e]+=" $s"; cpu[$e]+=" $c"; line+=" siam[$e] $s ms (cpu $c ms, $allocs allocs/step),"
  done
  read -r t c <<<"$(torch_ms)"
  res[torch]+=" $t"; cpu[torch]+=" $c"; line+=" pytorch $t ms (cpu $c ms)"
  echo "$line  (load $(cut -d' ' -f1 /proc/loadavg))"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
args=()
for k in "${!res[@]}"; do args+=("real:$k=${res[$k]}" "cpu:$k=${cpu[$k]}"); done
"$py" - "${args[@]}" <<'PY'
import statistics, sys
runs = dict(a.split("=", 1) for a in sys.argv[1:])
med = {k: statistics.median(float(x) for x in v.split()) for k, v in runs.items()}
for kind in ("real", "cpu"):
    for k in sorted(m for m in med if m.startswith(kind + ":")):
        print(f"median {kind} {k.split(':')[1]}: {med[k]:.1f} ms/step")
    for k in sorted(m for m in med if m.startswith(kind + ":") and not m.endswith(":torch")):
        print(f"ratio {kind} siam[{k.split(':')[1]}] / pytorch: {med[k] / med[kind + ':torch']:.2f}"
              "  (< 1: siam is faster)")
PY

#!/usr/bin/env bash
# Retrieval quality of `mnist_siamese --arch resnet --loss batch-all` against the same training
# in PyTorch (bench/pytorch_resnet.py train: the same network, data split, P x K batches,
# batch-all loss, Adam, schedule and number of steps; its own initial weights and batches),
# seed by seed, with siam's --arch cnn and --arch mlp under the same loss, data and iterations
# beside them. Prints a table of precision@1 and MAP@R (the test set against itself,
# siam::search::accuracy's definitions; pytorch_resnet.py computes them the same way) per
# seed, their means and standard deviations, and siam - PyTorch. Each siam ResNet run's
# metrics are also recomputed by pytorch_resnet.py from its embedding.csv (pytorch_resnet.py
# check), and the script stops if they differ by more than 1e-6.
# Builds nothing: BUILD_DIR must hold examples/mnist_siamese/mnist_siamese.
#
#   bench/compare_resnet_quality.sh BUILD_DIR SEEDS ITERATIONS     # SEEDS: 0,1,2
#
# Environment:
#   DATA        Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist)
#   TRAIN_SIZE  training images (60000); TEST_SIZE test images, queries and reference (10000)
#   THREADS     threads of each side (2); the runs go one after another
#   ARGS        more options for both sides, e.g. "--batch-pairs 90 --schedule cosine" (of
#               --batch-pairs --lr --beta1 --beta2 --schedule --warmup --margin)
#   BASELINES   siam's other networks ("cnn mlp"; empty: none)
#   BASELINE_DIM  their embedding size (64, the ResNet's; 0: the example's default, 2)
#   OUT         where the runs' outputs stay (a new temporary directory); results.jsonl there
#   KEEP        1: keep the runs already finished in OUT for the same seed and iterations
#               (a stopped comparison goes on where it stopped)
#   PYTHON      the Python with torch (/usr/bin/python3)
# PyTorch runs at its best on the CPU, as bench/compare_resnet.sh sets it up: tcmalloc through
# LD_PRELOAD and the OpenMP OpenBLAS first on the library path (convolutions on its oneDNN).
set -euo pipefail

usage="usage: $0 BUILD_DIR SEEDS ITERATIONS   (e.g. build 0,1,2 3000)"
build=${1:?$usage}
seeds=${2:?$usage}
iterations=${3:?$usage}
bin=$build/examples/mnist_siamese/mnist_siamese
data=${DATA:-/usr/share/datasets/fashion-mnist}
train_size=${TRAIN_SIZE:-60000}
test_size=${TEST_SIZE:-10000}
threads=${THREADS:-2}
baselines=${BASELINES-cnn mlp}
baseline_dim=${BASELINE_DIM:-64}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
read -r -a extra <<<"${ARGS:-}"
[[ -x $bin ]] || { echo "compare_resnet_quality.sh: $bin is not an executable" >&2; exit 1; }
[[ -d $data ]] || { echo "compare_resnet_quality.sh: --data $data is not a directory" >&2; exit 1; }
[[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "compare_resnet_quality.sh: SEEDS $seeds: expected 0,1,2" >&2; exit 1; }
[[ $iterations =~ ^[1-9][0-9]*$ ]] || { echo "compare_resnet_quality.sh: ITERATIONS $iterations: expected a number >= 1" >&2; exit 1; }
for b in $baselines; do
  [[ $b == cnn || $b == mlp ]] || { echo "compare_resnet_quality.sh: BASELINES: $b is not cnn or mlp" >&2; exit 1; }
done
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

omp_dir=$(dpkg -L libopenblas0-openmp 2>/dev/null | grep -E '/libopenblas\.so\.0$' | head -n1 | xargs -r dirname || true)
tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 / {print $NF; exit}' || true)
[[ -n $tcmalloc ]] || echo "compare_resnet_quality.sh: tcmalloc not found (libtcmalloc-minimal4): PyTorch runs with glibc malloc" >&2

out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

# Whether a finished run's result ($1: metrics.json, or a PyTorch log ending in its JSON line)
# is for seed $2 and this number of iterations (KEEP=1 reuses such runs).
kept() {
  "$py" -c 'import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1] if sys.argv[1].endswith(".log") else open(sys.argv[1]).read())
sys.exit(0 if (j["seed"], j["iterations"]) == (int(sys.argv[2]), int(sys.argv[3])) else 1)' "$1" "$2" "$iterations" 2>/dev/null
}

# One siam run: $1 arch, $2 seed; appends its line to results.jsonl.
siam_run() {
  local arch=$1 seed=$2 dir=$out/siam-$1-seed$2 net=()
  case $arch in
    cnn) [[ $baseline_dim == 0 ]] || net=(--embedding-dim "$baseline_dim") ;;
    mlp) [[ $baseline_dim == 0 ]] || net=(--layers "784,1024,1024,$baseline_dim") ;;
  esac
  if [[ -n ${KEEP:-} && -f $dir/metrics.json ]] && kept "$dir/metrics.json" "$seed"; then
    echo "  siam $arch seed $seed: kept from $dir"
  else
  "$bin" --arch "$arch" "${net[@]}" --loss batch-all --data "$data" --train-size "$train_size" \
    --test-size "$test_size" --seed "$seed" --iterations "$iterations" --threads "$threads" \
    --eval-every "$iterations" "${extra[@]}" --out "$dir" >"$dir.log" 2>&1 ||
    { echo "compare_resnet_quality.sh: siam --arch $arch seed $seed failed; see $dir.log" >&2; tail -n 5 "$dir.log" >&2; exit 1; }
  fi
  "$py" - "$dir/metrics.json" "$arch" >>"$results" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"side": "siam " + sys.argv[2], "seed": m["seed"], "iterations": m["iterations"],
                  "precision_at_1": m["precision_at_1"], "map_at_r": m["map_at_r"],
                  "r_precision": m["r_precision"], "seconds": m["training_seconds"],
                  "ms_per_iteration": m["ms_per_iteration"], "threads": m["threads"]}))
PY
}

torch_run() {
  local seed=$1 log=$out/pytorch-resnet-seed$1.log
  if [[ -n ${KEEP:-} && -f $log ]] && kept "$log" "$seed"; then
    echo "  pytorch resnet seed $seed: kept from $log"
  else
  LD_PRELOAD=$tcmalloc LD_LIBRARY_PATH="${omp_dir}${omp_dir:+:}${LD_LIBRARY_PATH:-}" \
    "$py" "$here/pytorch_resnet.py" train --data "$data" --train-size "$train_size" \
    --test-size "$test_size" --seed "$seed" --iterations "$iterations" --threads "$threads" \
    "${extra[@]}" >"$log" 2>&1 ||
    { echo "compare_resnet_quality.sh: pytorch seed $seed failed; see $log" >&2; tail -n 5 "$log" >&2; exit 1; }
  fi
  "$py" -c 'import json, sys; j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); j["side"] = "pytorch resnet"; print(json.dumps(j))' "$log" >>"$results"
}

show_last() {
  "$py" -c 'import json, sys; j = json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("  %-15s seed %s: precision@1 %.4f  MAP@R %.4f  (%.0f s training, %.0f ms/step)  load %s" % (j["side"], j["seed"], j["precision_at_1"], j["map_at_r"], j["seconds"], j["ms_per_iteration"], sys.argv[2]))' "$results" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "siam: $bin; pytorch: tcmalloc=${tcmalloc:-none}, openblas=${omp_dir:-default}; threads $threads each"
echo "data: $data, $train_size train / $test_size test; seeds $seeds; $iterations iterations; --loss batch-all${ARGS:+; $ARGS}"
dim_note=$baseline_dim
[[ $baseline_dim != 0 ]] || dim_note="the example's default"
echo "baselines: siam ${baselines:-none} (embedding $dim_note); outputs in $out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for seed in ${seeds//,/ }; do
  siam_run resnet "$seed"; show_last
  # The same metrics from siam's own test embeddings by pytorch_resnet.py's code: they must
  # agree (to 1e-6) for the comparison to mean anything.
  LD_PRELOAD=$tcmalloc "$py" "$here/pytorch_resnet.py" check --run "$out/siam-resnet-seed$seed" \
    --threads "$threads" >"$out/check-seed$seed.log" 2>&1 ||
    { echo "compare_resnet_quality.sh: pytorch_resnet.py's metrics differ from siam's; see $out/check-seed$seed.log" >&2; exit 1; }
  echo "  siam's embedding.csv through pytorch_resnet.py's metrics: largest |difference| from metrics.json $(awk '/\|difference\|/ {d = $NF + 0; if (d > m) m = d} END {printf "%.2g", m}' "$out/check-seed$seed.log")"
  torch_run "$seed"; show_last
  for b in $baselines; do siam_run "$b" "$seed"; show_last; done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sides = list(dict.fromkeys(r["side"] for r in rows))
seeds = list(dict.fromkeys(r["seed"] for r in rows))
get = {(r["side"], r["seed"]): r for r in rows}
cols = [(s, m) for s in sides for m in ("precision_at_1", "map_at_r")]
short = {"precision_at_1": "P@1", "map_at_r": "MAP@R"}
head = ["seed"] + [f"{s} {short[m]}" for s, m in cols] + ["siam-pytorch P@1", "siam-pytorch MAP@R"]
def diff(seed, m):
    a, b = get.get(("siam resnet", seed)), get.get(("pytorch resnet", seed))
    return a[m] - b[m] if a and b else float("nan")
table = [[str(seed)] + [f"{get[(s, seed)][m]:.4f}" for s, m in cols] +
         [f"{diff(seed, m):+.4f}" for m in ("precision_at_1", "map_at_r")] for seed in seeds]
means = {c: statistics.mean(get[(c[0], seed)][c[1]] for seed in seeds) for c in cols}
table.append(["mean"] + [f"{means[c]:.4f}" for c in cols] +
             [f"{statistics.mean(diff(seed, m) for seed in seeds):+.4f}" for m in ("precision_at_1", "map_at_r")])
if len(seeds) > 1:
    table.append(["sd"] + [f"{statistics.stdev(get[(c[0], seed)][c[1]] for seed in seeds):.4f}" for c in cols] +
                 [f"{statistics.stdev(diff(seed, m) for seed in seeds):.4f}" for m in ("precision_at_1", "map_at_r")])
width = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]
for r in [head] + table:
    print("  ".join(x.rjust(w) for x, w in zip(r, width)))
for s in sides:
    ms = [get[(s, seed)]["ms_per_iteration"] for seed in seeds]
    print(f"{s}: {statistics.mean(ms):.0f} ms/step on average (training only)")
PY
echo "results: $results"

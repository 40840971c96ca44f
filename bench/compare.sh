#!/usr/bin/env bash
# siam's training step (bench_train, BM_TrainStep) against the same step in PyTorch
# (bench/compare_pytorch.py), run alternately so that machine noise hits both alike.
# Prints every round, the medians and the ratio siam / PyTorch. Builds nothing.
#
#   bench/compare.sh BUILD_DIR/bench/bench_train [ROUNDS]
#
# Environment: THREADS (2), ROUNDS (3), STEPS / WARMUP (PyTorch: 200 / 20),
# PYTHON (/usr/bin/python3, Debian's, with python3-torch), PYTORCH_DEFAULT=1 to also
# time PyTorch with the system's default BLAS, FINITE=1 to time siam with its NaN/Inf
# check on (PyTorch has none; off by default).
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for both sides: set, they can force
# slower OpenBLAS kernels. PyTorch is run with the OpenMP build of OpenBLAS first on
# LD_LIBRARY_PATH (Debian: libopenblas0-openmp), its fastest configuration here.
set -euo pipefail

train=${1:?usage: $0 path/to/bench_train [rounds]}
rounds=${2:-${ROUNDS:-3}}
threads=${THREADS:-2}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
[[ -x $train ]] || { echo "compare.sh: $train is not an executable" >&2; exit 1; }

unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# The directory of the OpenMP OpenBLAS runtime, discovered rather than assumed.
openblas_openmp_dir() {
  local lib=""
  if command -v dpkg >/dev/null; then
    lib=$(dpkg -L libopenblas0-openmp 2>/dev/null | grep -E '/libopenblas\.so\.0$' | head -n1 || true)
  fi
  if [[ -z $lib ]]; then
    lib=$(ldconfig -p 2>/dev/null | awk '/openblas-openmp\/libopenblas\.so\.0/ {print $NF; exit}' || true)
  fi
  [[ -n $lib ]] && dirname "$lib"
  return 0
}
omp_dir=$(openblas_openmp_dir)

# The BM_TrainStep variant to time: THREADS threads, finite checks off unless FINITE=1.
want_finite=${FINITE:-0}
names=$("$train" --benchmark_list_tests --benchmark_filter='BM_TrainStep')
name=$(grep -E "threads:${threads}(/|$)" <<<"$names" | grep -E "check_finite:${want_finite}(/|$)" |
  head -n1 || true)
[[ -n $name ]] || name=$(grep -E "threads:${threads}(/|$)" <<<"$names" | head -n1 || true)
[[ -n $name ]] || name=$(head -n1 <<<"$names")
[[ -n $name ]] || { echo "compare.sh: no BM_TrainStep in $train" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

siam_ms() {  # mean real time per step of one run, in ms
  "$train" --benchmark_filter="^${name}\$" --benchmark_format=json >"$tmp/siam.json" 2>/dev/null
  "$py" - "$tmp/siam.json" <<'EOF'
import json, sys
unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
b = [b for b in json.load(open(sys.argv[1]))["benchmarks"] if b.get("run_type", "iteration") == "iteration"][0]
print(f'{b["real_time"] * unit[b["time_unit"]]:.2f}')
EOF
}

torch_ms() {  # $1: label; $2: LD_LIBRARY_PATH prefix (may be empty)
  local ldpath=$2
  LD_LIBRARY_PATH="${ldpath}${ldpath:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}" \
    "$py" "$here/compare_pytorch.py" --threads "$threads" --steps "${STEPS:-200}" \
    --warmup "${WARMUP:-20}" >"$tmp/torch_$1.json"
  "$py" -c 'import json, sys; print("%.2f" % json.load(open(sys.argv[1]))["ms_per_step"])' \
    "$tmp/torch_$1.json"
}

# A shared library's path, from the linker cache or the Debian package.
find_lib() {  # $1: file name, $2: Debian package
  local lib
  lib=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n {print $NF; exit}' || true)
  if [[ -z $lib ]] && command -v dpkg >/dev/null; then
    lib=$(dpkg -L "$2" 2>/dev/null | grep -E "/$1\$" | head -n1 || true)
  fi
  echo "$lib"
}
tcmalloc=$(find_lib libtcmalloc_minimal.so.4 libtcmalloc-minimal4)
jemalloc=$(find_lib libjemalloc.so.2 libjemalloc2)

torch_ms() {  # $1: configuration; prints the mean ms per step, keeps the JSON
  local c=$1 ldpath=$omp_dir
  local -a env=()
  case $c in
    tcmalloc) env+=("LD_PRELOAD=$tcmalloc") ;;
    jemalloc) env+=("LD_PRELOAD=$jemalloc") ;;
    glibc-tuned) env+=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
      MALLOC_TOP_PAD_=268435456) ;;
    default) ldpath="" ;;
  esac
  env+=("LD_LIBRARY_PATH=${ldpath}${ldpath:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}")
  env "${env[@]}" "$py" "$here/compare_pytorch.py" --threads "$threads" --steps "${STEPS:-200}" \
    --warmup "${WARMUP:-20}" >"$tmp/torch_$c.json"
  "$py" -c 'import json, sys; print("%.2f" % json.load(open(sys.argv[1]))["ms_per_step"])' \
    "$tmp/torch_$c.json"
}

configs=()
[[ -n $omp_dir ]] ||
  echo "compare.sh: OpenMP OpenBLAS not found (Debian: libopenblas0-openmp); PyTorch uses its default BLAS" >&2
for c in ${CONFIGS:-glibc tcmalloc jemalloc glibc-tuned}; do
  case $c in
    tcmalloc) [[ -n $tcmalloc ]] || { echo "compare.sh: no libtcmalloc_minimal.so.4; skipping tcmalloc" >&2; continue; } ;;
    jemalloc) [[ -n $jemalloc ]] || { echo "compare.sh: no libjemalloc.so.2; skipping jemalloc" >&2; continue; } ;;
    glibc | glibc-tuned | default) ;;
    *) echo "compare.sh: unknown configuration '$c'" >&2; exit 1 ;;
  esac
  configs+=("$c")
done
if [[ ${PYTORCH_DEFAULT:-0} == 1 ]]; then configs+=("default"); fi
[[ ${#configs[@]} -gt 0 ]] || { echo "compare.sh: no PyTorch configuration to run" >&2; exit 1; }

echo "siam:    $train  ($name)"
echo "pytorch: $py $here/compare_pytorch.py --threads $threads  (configs: ${configs[*]})"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A results
n=${#configs[@]}
for ((r = 1; r <= rounds; r++)); do
  s=$(siam_ms)
  results[siam]+=" $s"
  line="round $r: siam $s ms"
  for ((j = 0; j < n; j++)); do  # the configurations in a rotated order each round
    c=${configs[$(((j + r - 1) % n))]}
    t=$(torch_ms "$c")
    results[$c]+=" $t"
    line+=", $c $t"
  done
  echo "$line"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

args=("siam=${results[siam]}")
for c in "${configs[@]}"; do args+=("$c=${results[$c]}"); done
"$py" - "$tmp" "${args[@]}" <<'EOF'
import json, statistics, sys
tmp, runs = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
provider = json.load(open(f"{tmp}/siam.json"))["context"].get("siam_gemm_provider", "?")
vals = {k: [float(x) for x in v.split()] for k, v in runs.items()}
med = {k: statistics.median(v) for k, v in vals.items()}
def spread(k):
    return f"{min(vals[k]):.2f}-{max(vals[k]):.2f}"
print(f"median siam (GEMM: {provider}): {med['siam']:.2f} ms/step  (rounds {spread('siam')})")
torch = [k for k in runs if k != "siam"]
for k in torch:
    j = json.load(open(f"{tmp}/torch_{k}.json"))
    ob = j["blas"].get("openblas")
    blas = (f"OpenBLAS {ob['threading']} build, kernel {ob['corename']}"
            if ob else ", ".join(j["blas"]["loaded"]) or j["blas"]["torch_build_blas"])
    print(f"median pytorch[{k}]: {med[k]:.2f} ms/step  (rounds {spread(k)})  -- BLAS: {blas}; "
          f"allocator: {j['allocator']}")
best = min(torch, key=lambda k: med[k])
print(f"fastest PyTorch configuration: {best}")
print(f"ratio siam / pytorch[{best}]: {med['siam'] / med[best]:.2f}  (< 1: siam is faster)")
EOF

#!/usr/bin/env bash
# Compile cost of a downstream training program (tests/compiled/train_program.cpp: an MLP
# and a LeNet trained with the general trainer, then saved), header-only and against the
# compiled component (siam/compiled.hpp + siam::compiled), and of the umbrella header alone.
# Prints wall and user CPU seconds and the compiler's peak resident memory of each
# `g++ -std=c++20 -O2 -c`, measured by /usr/bin/time. Wall time depends on what else the
# machine runs; user time and memory are the steadier figures.
#   scripts/compile-time.sh [runs=1]   (CXX=clang++-14 to measure Clang, OPT=-O3 for -O3)
# With SIAM_TIME_TRACE=1 and a Clang, each compile also writes a -ftime-trace JSON beside
# its object and the script prints the trace's front end / back end split.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
cxx=${CXX:-g++}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
command -v /usr/bin/time >/dev/null || { echo "compile-time: /usr/bin/time is needed (Debian: time)"; exit 1; }
flags=(-std=c++20 "${OPT:--O2}" -fno-math-errno -fopenmp -Iinclude -isystem /usr/include/eigen3)
trace=()
[ "${SIAM_TIME_TRACE:-0}" = 1 ] && trace=(-ftime-trace)
printf '#include <siam/siamese.hpp>\nint main() { return 0; }\n' >"$out/umbrella.cpp"

measure() {  # name, extra flags..., source
  local name=$1; shift
  for ((r = 1; r <= runs; ++r)); do
    /usr/bin/time -f "%e %U %M" -o "$out/$name.time" "$cxx" "${flags[@]}" "${trace[@]}" "$@" \
      -c -o "$out/$name.o" 2>"$out/$name.err" || { cat "$out/$name.err"; exit 1; }
    read -r wall user rss <"$out/$name.time"
    printf '%-34s wall %6.1f s  user %6.1f s  peak memory %5d MB\n' "$name" "$wall" "$user" $((rss / 1024))
    if [ ${#trace[@]} -gt 0 ] && [ -f "$out/$name.json" ]; then
      python3 - "$out/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = {e["name"]: e["dur"] / 1e6 for e in d["traceEvents"] if e.get("name", "").startswith("Total ")}
print("  time trace: front end %.1f s (parsing %.1f s; instantiating functions %.1f s, classes %.1f s,"
      " partly nested), back end %.1f s (optimiser %.1f s)" % (
    t.get("Total Frontend", 0), t.get("Total Source", 0), t.get("Total InstantiateFunction", 0),
    t.get("Total InstantiateClass", 0), t.get("Total Backend", 0), t.get("Total Optimizer", 0)))
PY
    fi
  done
}

echo "compile-time: $("$cxx" --version | head -1), ${flags[*]} -c"
measure umbrella-only "$out/umbrella.cpp"
measure train-program-header-only tests/compiled/train_program.cpp
measure train-program-compiled -DTRAIN_PROGRAM_COMPILED tests/compiled/train_program.cpp
# The component itself, compiled once (as a build of siam::compiled does).
measure compiled-component src/compiled.cpp

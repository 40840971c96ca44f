#!/usr/bin/env bash
# Exact top-k search, siam against FAISS IndexFlatL2, side by side in one run on the same
# data and threads, with the FMA ceiling and the distance GEMMs' rate from bench_search.
#   bench/compare_search.sh BUILD_DIR [N] [NQ] [THREADS]     (defaults 1000000 10000 2)
# Needs Debian's python3-faiss (with numpy). Prints each side's time, their ratio, and how
# many neighbours differ (a difference at an exact distance tie is allowed).
set -euo pipefail
build=${1:?usage: compare_search.sh BUILD_DIR [N] [NQ] [THREADS]}
n=${2:-1000000}
nq=${3:-10000}
threads=${4:-2}
py=/usr/bin/python3
$py -c "import faiss, numpy" 2>/dev/null || { echo "compare_search: python3-faiss not installed"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=$threads
$py - "$tmp" "$n" "$nq" <<'PY'
import sys, time, numpy as np, faiss
tmp, n, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(7)
g = rng.standard_normal((n, 64), dtype=np.float32)
q = rng.standard_normal((nq, 64), dtype=np.float32)
g.tofile(tmp + "/gallery.f32"); q.tofile(tmp + "/queries.f32")
index = faiss.IndexFlatL2(64)
index.add(g)
t = time.perf_counter()
D, I = index.search(q, 10)
dt = time.perf_counter() - t
I.astype(np.int64).tofile(tmp + "/faiss_I.i64"); D.astype(np.float32).tofile(tmp + "/faiss_D.f32")
print(f"faiss IndexFlatL2 {faiss.__version__}: {dt:.3f} s, {2.0 * n * nq * 64 / dt / 1e9:.1f} GFLOP/s, threads {faiss.omp_get_max_threads()}")
open(tmp + "/faiss_s", "w").write(str(dt))
PY
SIAM_BENCH_DATA=$tmp env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$build/bench/bench_search" \
  --benchmark_filter='peak|exact' --benchmark_format=json --benchmark_out="$tmp/siam.json" \
  --benchmark_out_format=json >/dev/null
$py - "$tmp" "$n" "$nq" <<'PY'
import sys, json, numpy as np
tmp, n, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = {x["name"].split("/")[0]: x for x in json.load(open(tmp + "/siam.json"))["benchmarks"]}
peak, gemm, knn = b["peak_fma"]["flops"], b["exact_gemm_only"]["flops"], b["exact_knn"]
siam_s = knn["real_time"] / 1e3
faiss_s = float(open(tmp + "/faiss_s").read())
print(f"siam knn: {siam_s:.3f} s ({knn['flops'] / 1e9:.1f} GFLOP/s); time ratio siam/faiss = {siam_s / faiss_s:.3f}")
print(f"FMA peak {peak / 1e9:.1f} GFLOP/s; distance GEMMs alone {gemm / 1e9:.1f} GFLOP/s = {100 * gemm / peak:.0f}% of peak; whole search {100 * knn['flops'] / peak:.0f}%")
I_s = np.fromfile(tmp + "/siam_I.i64", dtype=np.int64).reshape(nq, 10)
I_f = np.fromfile(tmp + "/faiss_I.i64", dtype=np.int64).reshape(nq, 10)
g = np.fromfile(tmp + "/gallery.f32", dtype=np.float32).reshape(n, 64).astype(np.float64)
q = np.fromfile(tmp + "/queries.f32", dtype=np.float32).reshape(nq, 64).astype(np.float64)
diff = np.nonzero((I_s != I_f).any(axis=1))[0]
# A differing row is explained by a tie when both lists give the same exact distances.
unexplained = 0
for i in diff:
    ds = np.sort(((g[I_s[i]] - q[i]) ** 2).sum(1)); df = np.sort(((g[I_f[i]] - q[i]) ** 2).sum(1))
    unexplained += not np.allclose(ds, df, rtol=1e-5)
print(f"queries whose top-10 differ: {len(diff)} of {nq}; not explained by near-equal distances: {unexplained}")
PY

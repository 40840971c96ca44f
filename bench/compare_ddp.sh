#!/usr/bin/env bash
# siam's data-parallel step (dist_train under mpirun) against PyTorch DDP with Gloo
# (bench/compare_ddp.py), alternately, on the same network (784-1024-1024-2), global batch
# (180 pairs), data and optimizer, RANKS processes x 1 thread each. Per round it also
# times siam's variants (blocking MPI calls, 1 MB buckets, deterministic mode) and the
# one-process step on the whole and on half the batch and the gradient all-reduce alone
# (the model's terms, see docs/scaling.md). Builds nothing.
#
#   bench/compare_ddp.sh BUILD_DIR/tests/parallel/dist_train [ROUNDS]
#
# Environment: RANKS (2), STEPS (60), WARMUP (10), PYTHON (/usr/bin/python3 with torch).
set -euo pipefail
prog=${1:?usage: $0 path/to/dist_train [rounds]}
rounds=${2:-3}
ranks=${RANKS:-2}
steps=${STEPS:-60}
warmup=${WARMUP:-10}
py=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
data=$(mktemp)
trap 'rm -f "$data"' EXIT
common=(--layers 784,1024,1024,2 --images 2000 --classes 10 --lr 1e-2)
mpirun -np 1 "$prog" "${common[@]}" --dump-data "$data"
siam() {
  local np=$1; shift
  mpirun -np "$np" --oversubscribe --bind-to none "$prog" "${common[@]}" --pairs 180 \
    --steps $((steps + warmup)) --bench "$warmup" "$@" | tail -n1
}
for r in $(seq "$rounds"); do
  echo "# round $r ($(uptime | sed 's/.*load/load/'))"
  siam "$ranks"
  "$py" "$here/compare_ddp.py" "$data" --ranks "$ranks" --steps "$steps" --warmup "$warmup"
  siam "$ranks" --timeout 0
  siam "$ranks" --bucket-bytes 1000000
  siam "$ranks" --deterministic --blocks 8
  siam 1
  siam 1 --pairs 90 | sed 's/"ranks": 1/"ranks": 1, "pairs": 90/'
  mpirun -np "$ranks" --oversubscribe --bind-to none "$prog" "${common[@]}" --allreduce-only
done

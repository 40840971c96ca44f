#!/usr/bin/env bash
# dist_train across separate jobs: a deterministic run resumed with a different number of
# ranks (2 -> 1 and 1 -> 2) ends bit-identical to an uninterrupted run; a rank killed
# mid-run, or one that stops calling collectives, ends the job with a clear message within
# the timeout, and the last checkpoint stays loadable.
#   test_dist_cli.sh path/to/dist_train path/to/mpirun
set -uo pipefail
prog=$1
mpirun=${2:-mpirun}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { local np=$1; shift; "$mpirun" -np "$np" --oversubscribe "$prog" --deterministic --blocks 4 "$@"; }

run 1 --steps 20 --out "$dir/ref" >/dev/null || fail "one-process run"
run 2 --steps 20 --save "$dir/ck2" --save-at 10 --out "$dir/two" >/dev/null || fail "2-rank run"
cmp -s "$dir/ref" "$dir/two" || fail "2 ranks differ from 1 rank in deterministic mode"
run 1 --steps 20 --resume "$dir/ck2" --out "$dir/resumed1" >/dev/null || fail "2 -> 1 resume"
cmp -s "$dir/ref" "$dir/resumed1" || fail "2 -> 1 resume differs from the uninterrupted run"
run 1 --steps 10 --save "$dir/ck1" --save-at 10 >/dev/null || fail "1-rank run"
run 2 --steps 20 --resume "$dir/ck1" --out "$dir/resumed2" >/dev/null || fail "1 -> 2 resume"
cmp -s "$dir/ref" "$dir/resumed2" || fail "1 -> 2 resume differs from the uninterrupted run"
echo "ok: 1 rank, 2 ranks, 2 -> 1 and 1 -> 2 resumes are bit-identical"

# Rank 1 is killed at step 6 (SIGKILL): the job must fail, quickly, saying so.
start=$SECONDS
out=$(run 2 --steps 100000 --save "$dir/ck_kill" --save-at 3 --die-at 6 --timeout 20 2>&1) &&
  fail "the job succeeded although rank 1 was killed"
took=$((SECONDS - start))
[ "$took" -le 60 ] || fail "the killed job took ${took}s to end"
echo "$out" | grep -Eq "signal 9|Killed|siam::parallel: .* did not complete" ||
  fail "no clear message after a killed rank: $out"
run 1 --steps 4 --resume "$dir/ck_kill" >/dev/null || fail "the checkpoint before the kill does not load"
echo "ok: killed rank ended the job in ${took}s: $(echo "$out" | grep -E "signal 9|Killed|siam::parallel" | head -1)"

# Rank 1 stays alive but stops calling collectives: rank 0's 3 s timeout ends the job.
start=$SECONDS
out=$(run 2 --steps 100000 --stop-at 4 --timeout 3 2>&1) &&
  fail "the job succeeded although rank 1 stopped"
took=$((SECONDS - start))
[ "$took" -le 60 ] || fail "the stalled job took ${took}s to end"
echo "$out" | grep -Eq "siam::parallel: MPI_I[a-z]+ did not complete within 3 s on rank 0 of 2" ||
  fail "no timeout message: $out"
echo "ok: stalled rank ended the job in ${took}s: $(echo "$out" | grep siam::parallel | head -1)"

#!/usr/bin/env bash
# A training process killed with SIGKILL while it writes checkpoints (one every
# iteration, so much of its time is spent writing them) must leave the last complete
# checkpoint loadable, and a run resumed from it must finish normally.
# Usage: test_kill.sh path/to/mnist_siamese
set -u
bin=${1:?usage: test_kill.sh path/to/mnist_siamese}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total=60
args=(--train-size 200 --test-size 50 --batch-pairs 20 --eval-every 1000 --iterations $total)
status=0
killed_mid_run=0
for delay in 0.8 1.6 2.4; do
  out="$tmp/run-$delay"
  "$bin" "${args[@]}" --checkpoint-every 1 --out "$out" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -e "$out/metrics.json" ]; then
    echo "note  killed after ${delay}s: the run had already finished"
    continue
  fi
  [ -s "$out/checkpoint.siam" ] || { echo "note  killed after ${delay}s: before the first checkpoint"; continue; }
  killed_mid_run=$((killed_mid_run + 1))
  if "$bin" "${args[@]}" --resume "$out/checkpoint.siam" --out "$out/resumed" >"$tmp/log" 2>&1 &&
    [ "$(grep -c . "$out/resumed/loss.csv")" -eq $((total + 1)) ] && [ -s "$out/resumed/model.siam" ]; then
    echo "ok    killed after ${delay}s ($(ls "$out" | tr '\n' ' ')): checkpoint loads, the resumed run finishes"
  else
    echo "FAIL  killed after ${delay}s: resume failed: $(tail -2 "$tmp/log")"
    status=1
  fi
done
if [ $killed_mid_run -eq 0 ]; then
  echo "FAIL  no run was killed mid-way; the test proved nothing"
  status=1
fi
exit $status

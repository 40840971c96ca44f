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
# Each run is killed a while after its first checkpoint appears (waited for, so that a
# loaded machine does not make every kill land before it).
for delay in 0.05 0.3 0.8; do
  out="$tmp/run-$delay"
  "$bin" "${args[@]}" --checkpoint-every 1 --out "$out" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    [ -s "$out/checkpoint.siam" ] || ! kill -0 "$pid" 2>/dev/null && break
    sleep 0.05
  done
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -e "$out/metrics.json" ]; then
    echo "note  killed ${delay}s after its first checkpoint: the run had already finished"
    continue
  fi
  [ -s "$out/checkpoint.siam" ] || { echo "note  killed ${delay}s after its first checkpoint: no checkpoint"; continue; }
  killed_mid_run=$((killed_mid_run + 1))
  if "$bin" "${args[@]}" --resume "$out/checkpoint.siam" --out "$out/resumed" >"$tmp/log" 2>&1 &&
    [ "$(grep -c . "$out/resumed/loss.csv")" -eq $((total + 1)) ] && [ -s "$out/resumed/model.siam" ]; then
    echo "ok    killed ${delay}s after its first checkpoint ($(ls "$out" | tr '\n' ' ')): checkpoint loads, the resumed run finishes"
  else
    echo "FAIL  killed ${delay}s after its first checkpoint: resume failed: $(tail -2 "$tmp/log")"
    status=1
  fi
done
if [ $killed_mid_run -eq 0 ]; then
  echo "FAIL  no run was killed mid-way; the test proved nothing"
  status=1
fi
exit $status

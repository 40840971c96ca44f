#!/usr/bin/env bash
# mnist_siamese export and query --image, end to end. Usage:
#   test_interop_cli.sh path/to/mnist_siamese path/to/interop_fixtures
# query --image on PNGs of test image 7 (8-bit grey, RGB, RGBA, 16-bit, inverted) must
# return the neighbours of query --index 7: the image itself at distance 0, then the same
# 8 images in the same order. Hostile PNGs: one error line, exit 1, no output.
set -u
bin=${1:?usage: test_interop_cli.sh MNIST_SIAMESE FIXTURES}
fixtures=${2:?usage: test_interop_cli.sh MNIST_SIAMESE FIXTURES}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
pass() { echo "ok    $1"; }
fail() {
  echo "FAIL  $1"
  failures=$((failures + 1))
}
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

small=(--train-size 400 --test-size 100)
"$bin" "${small[@]}" --batch-pairs 40 --iterations 100 --eval-every 100 --out "$tmp/train" >/dev/null 2>&1
check "training run for the model" test -s "$tmp/train/model.siam"
model=$tmp/train/model.siam

# ---- export
"$bin" export --model "$model" --onnx "$tmp/m.onnx" --safetensors "$tmp/m.safetensors" >"$tmp/export.log" 2>&1
rc=$?
if grep -q "no ONNX export" "$tmp/export.log"; then
  echo "skip  export --onnx: this build has no ONNX export"
  "$bin" export --model "$model" --safetensors "$tmp/m.safetensors" >"$tmp/export.log" 2>&1
  rc=$?
else
  check "export writes model.onnx" test -s "$tmp/m.onnx"
fi
check "export exits 0 ($(tail -1 "$tmp/export.log"))" test $rc -eq 0
check "export writes model.safetensors" test -s "$tmp/m.safetensors"
"$bin" export --model "$model" >/dev/null 2>"$tmp/e1.err"
rc=$?
check "export without an output is a bad option ($(cat "$tmp/e1.err"))" test $rc -eq 2
"$bin" export --model "$tmp/none.siam" --safetensors "$tmp/x.st" >/dev/null 2>"$tmp/e2.err"
rc=$?
check "export of a missing model ($(cat "$tmp/e2.err"))" test $rc -eq 2 -a ! -e "$tmp/x.st"

# ---- query --image: the example's synthetic test set is synthetic_digits(N, seed + 1000003)
"$fixtures" pngs "$tmp/png" 100 1000003 7 >"$tmp/label.txt" || fail "fixtures pngs"
neighbours() { sed -n 's/^  #\([1-9]\)  image *\([0-9]*\) .*distance \(.*\)$/\1 \2 \3/p' "$1"; }
"$bin" query --model "$model" "${small[@]}" --index 7 --out "$tmp/qi" >"$tmp/qi.log" 2>&1
check "query --index 7 exits 0" test $? -eq 0
neighbours "$tmp/qi.log" | awk 'NR <= 8 { print $2 }' >"$tmp/want.txt"
check "query --index 7 lists 9 neighbours" test "$(neighbours "$tmp/qi.log" | wc -l)" -eq 9
for img in gray8 rgb rgba gray16 inverted; do
  "$bin" query --model "$model" "${small[@]}" --image "$tmp/png/$img.png" --out "$tmp/q_$img" \
    >"$tmp/q_$img.log" 2>&1
  check "query --image $img.png exits 0" test $? -eq 0
  first=$(neighbours "$tmp/q_$img.log" | head -1)
  check "$img.png: nearest is test image 7 at distance 0 ($first)" test "$first" = "1 7 0.00000"
  neighbours "$tmp/q_$img.log" | awk 'NR >= 2 { print $2 }' >"$tmp/got.txt"
  check "$img.png: then the 8 neighbours of --index 7" cmp -s "$tmp/want.txt" "$tmp/got.txt"
  check "$img.png: writes retrieval.png" test -s "$tmp/q_$img/retrieval.png"
done
check "inverted.png is detected as black on white" grep -q "inverted to white on black" "$tmp/q_inverted.log"
"$bin" query --model "$model" "${small[@]}" --image "$tmp/png/inverted.png" --invert no \
  --out "$tmp/q_noinv" >"$tmp/q_noinv.log" 2>&1
check "--invert no keeps black on white (another nearest image)" \
  test "$(neighbours "$tmp/q_noinv.log" | head -1)" != "1 7 0.00000"
"$bin" query --model "$model" "${small[@]}" --image "$tmp/png/gray8.png" --image "$tmp/png/big.png" \
  --out "$tmp/q_two" >"$tmp/q_two.log" 2>&1
check "two --image: exits 0, 18 neighbours, two figures" \
  test $? -eq 0 -a "$(neighbours "$tmp/q_two.log" | wc -l)" -eq 18 -a -s "$tmp/q_two/retrieval_1.png"

# ---- bad images and options: one line, non-zero exit, no output directory
for bad in empty text truncated huge bomb corrupt; do
  rm -rf "$tmp/qb"
  "$bin" query --model "$model" "${small[@]}" --image "$tmp/png/gray8.png" --image "$tmp/png/$bad.png" \
    --out "$tmp/qb" >/dev/null 2>"$tmp/qb.err"
  rc=$?
  check "$bad.png is refused (rc $rc: $(cat "$tmp/qb.err"))" \
    test $rc -eq 1 -a "$(wc -l <"$tmp/qb.err")" -eq 1 -a ! -e "$tmp/qb"
done
grep -q "100000 x 100000" <("$bin" query --model "$model" --image "$tmp/png/huge.png" --out "$tmp/qb" 2>&1)
check "huge.png's message names its size" test $? -eq 0
"$bin" query --model "$model" --image "$tmp/png/gray8.png" --invert maybe --out "$tmp/qb" 2>"$tmp/qb.err" >/dev/null
rc=$?
check "--invert maybe is a bad option ($(cat "$tmp/qb.err"))" test $rc -eq 2 -a ! -e "$tmp/qb"
"$bin" query --model "$model" --image "$tmp/png/missing.png" --out "$tmp/qb" 2>"$tmp/qb.err" >/dev/null
rc=$?
check "a missing --image is a bad option ($(cat "$tmp/qb.err"))" test $rc -eq 2 -a ! -e "$tmp/qb"

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"

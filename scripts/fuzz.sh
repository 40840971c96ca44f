#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined), makes the
# seed corpus and runs each target for SECONDS_PER_TARGET (default 40). Fails on any crash,
# leak, sanitizer report or out-of-memory (-rss_limit_mb). Prints the executions done.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-40}
out=build/ci/fuzz
mkdir -p "$out"
cxx=${CLANGXX:-clang++-14}
flags=(-std=c++20 -O1 -g -Iinclude -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
$cxx -std=c++20 -O1 -Iinclude -isystem /usr/include/eigen3 tests/fuzz/make_corpus.cpp -lz -o "$out/make_corpus"
rm -rf "$out/corpus" && "$out/make_corpus" "$out/corpus/idx" "$out/corpus/archive" "$out/corpus/safetensors"
for t in idx archive safetensors; do
  $cxx "${flags[@]}" -isystem /usr/include/eigen3 tests/fuzz/fuzz_$t.cpp -lz -o "$out/fuzz_$t"
  mkdir -p "$out/work_$t"
  echo "fuzz_$t: ${secs}s"
  "$out/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=512 -max_len=4096 -print_final_stats=1 \
    "$out/work_$t" "$out/corpus/$t" 2>"$out/fuzz_$t.log" || { tail -40 "$out/fuzz_$t.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/fuzz_$t.log" | sed "s/^/  /"
done
# The JPEG reader (libjpeg-turbo) when its header is installed: at most 20 s, seeds made by
# the same source built without libFuzzer.
if [ -f /usr/include/turbojpeg.h ]; then
  jsecs=$(( secs < 20 ? secs : 20 ))
  $cxx -std=c++20 -O1 -Iinclude -DFUZZ_JPEG_SEEDS tests/fuzz/fuzz_jpeg.cpp -lturbojpeg -o "$out/fuzz_jpeg_seeds"
  rm -rf "$out/corpus/jpeg" && "$out/fuzz_jpeg_seeds" "$out/corpus/jpeg"
  $cxx "${flags[@]}" tests/fuzz/fuzz_jpeg.cpp -lturbojpeg -o "$out/fuzz_jpeg"
  mkdir -p "$out/work_jpeg"
  echo "fuzz_jpeg: ${jsecs}s"
  "$out/fuzz_jpeg" -max_total_time="$jsecs" -rss_limit_mb=512 -max_len=4096 -print_final_stats=1 \
    "$out/work_jpeg" "$out/corpus/jpeg" 2>"$out/fuzz_jpeg.log" || { tail -40 "$out/fuzz_jpeg.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/fuzz_jpeg.log" | sed "s/^/  /"
else
  echo "fuzz_jpeg: skipped (libturbojpeg not installed)"
fi
# The HNSW index file (siam/search/hnsw.hpp) when hnswlib is installed, at most 20 s.
# NO_MANUAL_VECTORIZATION: hnswlib's SSE search prefetches the slot after a full link list
# (reading a vector's first float as an id), an address computation UBSan flags inside
# hnswlib itself; siam's own checks run the same either way.
if [ -f /usr/include/hnswlib/hnswlib.h ]; then
  isecs=$(( secs < 20 ? secs : 20 ))
  $cxx -std=c++20 -O1 -Iinclude -isystem /usr/include/eigen3 -DSIAM_FUZZ_MAKE_SEED \
    tests/fuzz/fuzz_index.cpp -lz -o "$out/make_index_seed"
  rm -rf "$out/corpus/index" && mkdir -p "$out/corpus/index" "$out/work_index"
  "$out/make_index_seed" "$out/corpus/index/seed.hnsw"
  $cxx "${flags[@]}" -isystem /usr/include/eigen3 -DNO_MANUAL_VECTORIZATION \
    tests/fuzz/fuzz_index.cpp -lz -o "$out/fuzz_index"
  echo "fuzz_index: ${isecs}s"
  "$out/fuzz_index" -max_total_time="$isecs" -rss_limit_mb=512 -max_len=4096 -print_final_stats=1 \
    "$out/work_index" "$out/corpus/index" 2>"$out/fuzz_index.log" || { tail -40 "$out/fuzz_index.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/fuzz_index.log" | sed "s/^/  /"
else
  echo "fuzz_index: skipped (hnswlib not installed: libhnswlib-dev)"
fi

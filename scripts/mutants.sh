#!/usr/bin/env bash
# Mutation check: small bugs planted one at a time in a copy of the library; the tests
# must catch (kill) every one. Each mutant names a file, the exact original text, its
# replacement and the test executables that must fail with it. The original text must
# occur exactly once in its file: a refactor that changes or duplicates it stops this
# script (update the list) instead of silently turning the mutant into a no-op.
#
# The working tree is never modified: CMakeLists.txt, cmake/, include/ and tests/ are
# copied to BUILD/src and configured once in BUILD/bin (CPU only, tests only, -O1 to keep
# the rebuilds short); each mutant is applied to the copy, only its tests are rebuilt and
# run, and the file is restored. The unmutated tests are built and run first: they must
# pass, or nothing can be concluded.
#
# Usage: scripts/mutants.sh [BUILD]    (default build/mutants; SIAM_JOBS: parallel jobs, 2;
#        SIAM_MUTANTS_ONLY="3 7": only those mutants, by number, e.g. to check a new one)
# Prints "mutants: K/N killed"; exits non-zero if a mutant survives, does not compile, or
# its original text is not found exactly once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/build/mutants}")
jobs=${SIAM_JOBS:-2}
src=$out/src
bin=$out/bin
logs=$out/logs
start=$SECONDS

files=() targets=() origs=() repls=()
mutant() {  # mutant FILE "TARGET..." ORIGINAL REPLACEMENT
  files+=("$1") targets+=("$2") origs+=("$3") repls+=("$4")
}

# ---- the mutants
# conv: the weight gradient overwritten by each image group instead of accumulated
mutant include/siam/backend/conv_host.hpp test_conv \
  'B::gemm(false, true, O, K, n, T(1), dym, n, col, n, first ? T(0) : T(1), dwp, K);' \
  'B::gemm(false, true, O, K, n, T(1), dym, n, col, n, T(0), dwp, K);'
# pooling: two outputs whose maximum is the same input: the second gradient replaces the first
mutant include/siam/backend/conv_host.hpp test_conv \
  'dp[static_cast<index_t>(ip[q])] += d[q];' \
  'dp[static_cast<index_t>(ip[q])] = d[q];'
# mining: batch hard averaged over every image instead of the anchors kept
mutant include/siam/loss/mining.hpp test_losses \
  'return mean(opt.soft ? softplus(x) : relu(x + static_cast<T>(opt.margin)));' \
  'return sum(opt.soft ? softplus(x) : relu(x + static_cast<T>(opt.margin))) * static_cast<T>(1.0 / static_cast<double>(n));'
# mining: batch all divided by the valid triplets instead of the active ones
mutant include/siam/loss/mining.hpp test_losses \
  'opt.soft ? valid : std::max<index_t>(active, 1)' \
  'opt.soft ? valid : std::max<index_t>(valid, 1)'
# losses: NT-Xent with half the temperature
mutant include/siam/loss/ntxent.hpp test_losses \
  'static_cast<T>(1 / opt.temperature)' \
  'static_cast<T>(2 / opt.temperature)'
# CPU backend: the fused contrastive loss's coefficient with the hinge term's sign flipped
# (the Euclidean form; test_autodiff checks it at and around the margin)
mutant include/siam/backend/cpu.hpp test_autodiff \
  'pc[i] = s2 * (py[i] - (T(1) - py[i]) * hinge / d);' \
  'pc[i] = s2 * (py[i] + (T(1) - py[i]) * hinge / d);'
# CPU backend: scatter-add (gather_rows' backward) overwrites repeated rows
mutant include/siam/backend/cpu.hpp test_ops \
  'SIAM_IVDEP for (index_t c = lo; c < hi; ++c) d[c] += s[c];' \
  'SIAM_IVDEP for (index_t c = lo; c < hi; ++c) d[c] = s[c];'
# optimizers: the fused pass drops the 8th tensor of a full batch of 8
mutant include/siam/optim/optimizer.hpp test_optim \
  'fused_batch<T, B>(groups.data(), k);' \
  'fused_batch<T, B>(groups.data(), k == groups.size() ? k - 1 : k);'
# optimizers: Adam's second-moment bias correction one step ahead
mutant include/siam/optim/adam.hpp test_optim \
  'const double c2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_));' \
  'const double c2 = 1 - std::pow(opt_.beta2, static_cast<double>(t_ + 1));'
# optimizers: Nesterov SGD forgets the weight decay in the parameter update
mutant include/siam/optim/sgd.hpp test_optim \
  'return w - lr * ((g + wd * w) + mu * b);' \
  'return w - lr * (g + mu * b);'
# ops: the product's gradient for b multiplied by b instead of a
mutant include/siam/autodiff/ops.hpp test_autodiff \
  'tp.accumulate(n.in[1], tp.out_grad(n) * tp.value(n.in[0]));' \
  'tp.accumulate(n.in[1], tp.out_grad(n) * tp.value(n.in[1]));'
# ops: the tape overwrites a gradient that is already there instead of adding
mutant include/siam/autodiff/tape.hpp test_autodiff \
  '      g += e;' \
  '      g = e;'
# ops: a node recording eight inputs hands its backward the first one in place of the 8th
mutant include/siam/autodiff/tape.hpp test_ops \
  'n.in[k] = in[k];' \
  'n.in[k] = in[k == 7 ? 0 : k];'
# model file: the archive reader ignores its checksum
mutant include/siam/io/archive.hpp test_conv \
  'if (stored != actual) throw' \
  'if (stored != actual && stored == 0) throw'
# batch norm: the backward's x coefficient (the sum(dy xhat) term) with its sign flipped
mutant include/siam/backend/batchnorm_host.hpp test_layers_modern \
  'const T Bc = -k * invstd[ch] * sx;' \
  'const T Bc = k * invstd[ch] * sx;'
# batch norm fused with its ReLU: the backward's sums see dy unmasked
mutant include/siam/backend/batchnorm_host.hpp test_layers_modern \
  'a = on_or_zero(affine(ra, xq, rb), dq);' \
  'a = dq;'
# batch norm on channel-blocked data: the backward's x coefficient with its sign flipped
mutant include/siam/backend/batchnorm_host.hpp test_layers_modern \
  'Bc[u] = -kq * invstd[ch] * sx;' \
  'Bc[u] = kq * invstd[ch] * sx;'
# batch norm + ReLU on channel-blocked data: the backward's sums see dy unmasked
mutant include/siam/backend/batchnorm_host.hpp test_layers_modern \
  'if (relu) g = (V)((M)g & ~(M)(ra * v + rb <= zero));  // dy [z > 0]; NaN passes' \
  'if (relu) (void)rb;'
# channel blocks of 8 and 16 back to NCHW: the tile read transposed
mutant include/siam/backend/blocked_host.hpp test_layers_modern \
  'tile[u][q] = src[(q0 + q) * K + u];' \
  'tile[u][q] = src[(q0 + u) * K + q];'
# a residual sum fused with its ReLU: b's gradient dropped when a's was fresh
mutant include/siam/autodiff/ops.hpp test_ops \
  '          tp.accumulate(n.in[1], ga);' \
  '          (void)ga;'
# loader: each row decodes the next row's image (an off-by-one in the item index)
mutant include/siam/data/loader.hpp test_images \
  'folder_.load(rows[r], spec_.decode_shrink' \
  'folder_.load(rows[(r + 1) % rows.size()], spec_.decode_shrink'
# loader: a transform key drawn also without augmentation (the folder's batches drift from
# the in-memory ones of the same seed)
mutant include/siam/data/loader.hpp test_images \
  's.key = spec_.augment ? plan_rng_.next_u64() : 0;' \
  's.key = plan_rng_.next_u64();'
# trainer: the triplet source asked for batch_pairs triplets instead of 2/3 of them
mutant include/siam/train/siamese_trainer.hpp test_train \
  '      r.n = 2 * cfg_.batch_pairs / 3;' \
  '      r.n = cfg_.batch_pairs;'

# ---- a copy of the sources, configured once
mkdir -p "$out" "$logs"
rm -rf "$src"
mkdir -p "$src"
cp -R "$root/CMakeLists.txt" "$root/cmake" "$root/include" "$root/src" "$root/tests" "$src/"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$src" -B "$bin" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DSIAM_CUDA=OFF -DSIAM_BUILD_EXAMPLES=OFF -DSIAM_BUILD_BENCHMARKS=OFF "${launcher[@]}" \
  >"$logs/configure.log" 2>&1 || {
  cat "$logs/configure.log"
  exit 1
}

# Every original text must be there exactly once before anything is built.
n=${#files[@]}
selected=()
for ((i = 0; i < n; ++i)); do
  if [ -z "${SIAM_MUTANTS_ONLY:-}" ] || [[ " $SIAM_MUTANTS_ONLY " == *" $((i + 1)) "* ]]; then
    selected+=("$i")
  fi
done
bad=0
for ((i = 0; i < n; ++i)); do
  f=$src/${files[i]}
  content=$(cat "$f" && printf x)
  rest=${content//"${origs[i]}"/}
  found=$(((${#content} - ${#rest}) / ${#origs[i]}))
  if [ "$found" -ne 1 ]; then
    echo "mutant $((i + 1)): '${origs[i]}' occurs $found times in ${files[i]} (must be once)"
    bad=1
  fi
done
[ $bad -eq 0 ] || exit 1

run_tests() {  # run_tests LOG TARGET...: 0 when every test passes
  local log=$1 t rc=0
  shift
  for t in "$@"; do
    timeout 600 "$bin/tests/$t" >>"$log" 2>&1 || rc=1
  done
  return $rc
}

# ---- the unmutated tests pass
all_targets=$(for i in "${selected[@]}"; do echo "${targets[i]}"; done | tr ' ' '\n' | sort -u |
  tr '\n' ' ')
# shellcheck disable=SC2086
if ! cmake --build "$bin" -j"$jobs" --target $all_targets >"$logs/baseline.log" 2>&1 ||
  ! run_tests "$logs/baseline.log" $all_targets; then
  tail -40 "$logs/baseline.log"
  echo "mutants: the unmutated tests fail ($all_targets); see $logs/baseline.log"
  exit 1
fi
printf 'baseline: %s pass (%ds)\n' "$all_targets" $((SECONDS - start))

# ---- each mutant
killed=0
survivors=()
for i in "${selected[@]}"; do
  f=$src/${files[i]}
  log=$logs/mutant-$((i + 1)).log
  cp "$f" "$f.orig"
  content=$(cat "$f" && printf x)
  content=${content%x}
  printf '%s' "${content/"${origs[i]}"/"${repls[i]}"}" >"$f"
  t0=$SECONDS
  # shellcheck disable=SC2086
  if ! cmake --build "$bin" -j"$jobs" --target ${targets[i]} >"$log" 2>&1; then
    mv "$f.orig" "$f"
    tail -20 "$log"
    echo "mutant $((i + 1)) (${files[i]}) does not compile: fix the list"
    exit 1
  fi
  # shellcheck disable=SC2086
  if run_tests "$log" ${targets[i]}; then
    verdict=SURVIVED
    survivors+=("$((i + 1)): ${files[i]}: '${origs[i]}' -> '${repls[i]}' (${targets[i]})")
  else
    verdict=killed
    killed=$((killed + 1))
  fi
  mv "$f.orig" "$f"
  touch "$f"  # newer than the mutant's objects: the next build recompiles
  printf 'mutant %2d %-9s %-36s by %s (%ds)\n' $((i + 1)) "$verdict" "${files[i]#include/siam/}" \
    "${targets[i]}" $((SECONDS - t0))
done

echo "mutants: $killed/${#selected[@]} killed ($((SECONDS - start)) s)"
if [ ${#survivors[@]} -gt 0 ]; then
  printf 'survived: %s\n' "${survivors[@]}"
  exit 1
fi

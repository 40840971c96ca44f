#!/usr/bin/env bash
# Builds the mnist_siamese example (Release) and runs it. With no arguments it trains
# on the built-in synthetic digits with the classic settings and writes its figures,
# CSV files, metrics and model to out/. Any arguments are passed to the program, e.g.
#   scripts/run-example.sh --data /usr/share/datasets/fashion-mnist --out out-fashion
# Installs its own Debian dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build/example -DCMAKE_BUILD_TYPE=Release -DSIAM_BUILD_TESTS=OFF \
  -DSIAM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/example -j"${SIAM_JOBS:-2}" --target mnist_siamese
exec build/example/examples/mnist_siamese/mnist_siamese "$@"

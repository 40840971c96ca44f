#!/usr/bin/env bash
# Checks the layering of docs/architecture.md: from the compiler's dependency output (-MM)
# of every public header, no header reaches one of a higher layer, and the umbrella header
# <siam/siamese.hpp> reaches no optional engine. A header in no layer below is an error too
# (place it in layer_of and in the table of docs/architecture.md).
# Only the preprocessor runs, on siam's own headers (-MM -MG -nostdinc: system and third-party
# headers are not read; __CUDACC__ is defined so that the nvcc-only headers are followed too).
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX:-g++}
command -v "$cxx" >/dev/null || { echo "check-layers: no C++ compiler ($cxx)"; exit 1; }

# The layers of docs/architecture.md, bottom (0) to top; a header may include its own layer
# and the ones below.
layer_of() {
  case ${1#include/siam/} in
    error.hpp|shape.hpp|random.hpp|version.hpp|detail/*) echo 0 ;;  # shapes, errors, random
    functors.hpp|expr.hpp) echo 1 ;;                                  # expressions
    assign.hpp|tensor.hpp|backend_concept.hpp) echo 2 ;;              # evaluation
    backend/*) echo 3 ;;                                              # backends
    autodiff/*) echo 4 ;;                                             # autodiff
    loss/*) echo 5 ;;                                                 # losses
    nn/*|optim/*|testing/*) echo 6 ;;                                 # nn, optim
    train/*|inference.hpp|data/*|metrics.hpp|search/*|io/*) echo 7 ;;  # workflow
    presets/*) echo 8 ;;                                              # presets (one data set's or paper's choices)
    parallel/*) echo 9 ;;                                             # data-parallel training
    siamese.hpp|compiled.hpp) echo 10 ;;                              # the umbrella header (and its compiled instantiations)
    *) echo -1 ;;
  esac
}
# What the umbrella header must never reach: the optional engines.
optional='backend/cuda|backend/cudnn|backend/conv_dnnl|io/onnx|data/png|data/jpeg|search/hnsw|search/exact_cuda|parallel/(mpi|nccl)'
export -f layer_of
export cxx optional

headers=$(find include/siam -name '*.hpp' | sort)
n=$(echo "$headers" | wc -l)
out=$(echo "$headers" | xargs -P "${SIAM_JOBS:-2}" -I{} bash -c '
  h={}
  lh=$(layer_of "$h")
  [ "$lh" -ge 0 ] || { echo "$h: in no layer (add it to scripts/check-layers.sh)"; exit 0; }
  deps=$(echo "#include <${h#include/}>" |
         "$cxx" -std=c++20 -MM -MG -nostdinc -nostdinc++ -D__CUDACC__ -Iinclude -x c++ - 2>/dev/null |
         tr " \\\\" "\n\n" | grep "^include/siam/.*\.hpp$" | sort -u) ||
    { echo "$h: the preprocessor failed"; exit 0; }
  [ -n "$deps" ] || { echo "$h: no dependency output"; exit 0; }
  for d in $deps; do
    ld=$(layer_of "$d")
    [ "$ld" -le "$lh" ] || echo "$h (layer $lh) reaches $d (layer $ld)"
  done
  if [ "$h" = include/siam/siamese.hpp ]; then
    echo "$deps" | grep -E "include/siam/($optional)" | sed "s|^|$h reaches the optional |" || true
  fi')
if [ -n "$out" ]; then
  echo "check-layers: an include from a lower layer to a higher one (docs/architecture.md):"
  echo "$out" | sed 's/^/  /'
  exit 1
fi
echo "check-layers: $n headers, no upward include"

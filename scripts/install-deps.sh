#!/usr/bin/env bash
# Installs the Debian packages siam's build, tests, example and benchmarks use.
# Idempotent: when everything is present it only checks and returns.
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libeigen3-dev                          # the CPU backend (Eigen 3.4)
  doctest-dev libbenchmark-dev           # tests and benchmarks
  zlib1g-dev libpng-dev                  # gzip'd IDX files, archives
  libturbojpeg0-dev                      # JPEG reading (siam/data/jpeg.hpp), optional
  libcli11-dev                           # the example's command line
  libplplot-dev plplot-driver-cairo      # the example's figures (PNG via cairo)
  fonts-dejavu-core                      # a font for the figures' text
  libopenblas-dev libopenblas0-openmp libblis-dev  # optional BLAS backends
  libdnnl-dev                            # oneDNN: the default CPU GEMM provider (SIAM_BLAS=auto)
  libblis-openmp-dev libtcmalloc-minimal4 libjemalloc2  # bench_gemm's BLIS; PyTorch's allocators in bench/compare.sh
  clang-14 libclang-rt-14-dev            # fuzzing (libFuzzer) and sanitizer runtimes
  valgrind
  libonnx-dev libprotobuf-dev            # ONNX export (siam/io/onnx.hpp), optional
  python3-numpy python3-onnx python3-opencv  # interop checks (onnx.checker, OpenCV DNN)
  python3-torch                          # interop check: PyTorch loads the exported safetensors
  libopenmpi-dev openmpi-bin             # data-parallel training over MPI (siam/parallel/mpi.hpp)
  libdnnl-dev                            # optional oneDNN convolution engine (SIAM_DNNL)
  libhnswlib-dev                         # approximate search (siam/search/hnsw.hpp), optional
  python3-faiss                          # bench/compare_search.sh: exact search against FAISS
  dataset-fashion-mnist                  # Fashion-MNIST (IDX): the ResNet quality comparison
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"

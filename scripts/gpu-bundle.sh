#!/usr/bin/env bash
# Collects the GPU test, benchmark and example binaries of a CUDA build, with the
# shared libraries they need that a bare CUDA machine may lack (not the CUDA runtime,
# cuBLAS(Lt), cuDNN, NCCL or the C library, which a CUDA machine has), into one folder that
# scripts/gpu-check.sh can run from.
# Usage: scripts/gpu-bundle.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?build directory}
out=${2:?output directory}
mkdir -p "$out/lib"
bins=()
for b in tests/test_cuda_runtime tests/test_cuda_backend tests/test_parity bench_gpu \
  examples/mnist_siamese/mnist_siamese; do
  [ -x "$build/$b" ] && bins+=("$build/$b")
done
[ ${#bins[@]} -gt 0 ] || { echo "gpu-bundle: no GPU binaries in $build" >&2; exit 1; }
cp "${bins[@]}" "$out/"
for b in "${bins[@]}"; do
  ldd "$b" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so|libcuda|libcudart|libcublas|libcudnn|libnccl|libnvidia' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
# compute-sanitizer, when this toolkit has it, for gpu-check.sh's sanitizer runs.
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
san_dir=$(dirname "$(readlink -f "$nvcc")")/../compute-sanitizer
[ -x "$san_dir/compute-sanitizer" ] && cp -r "$san_dir" "$out/compute-sanitizer"
# The example draws with PLplot, which loads its cairo driver at run time and needs its
# data files and a font: bring those too (found through pkg-config, not guessed).
if [ -x "$build/examples/mnist_siamese/mnist_siamese" ]; then
  libdir=$(pkg-config --variable=libdir plplot)
  drv=$(pkg-config --variable=drvdir plplot)
  data=$(ls -d "${libdir%/lib*}"/share/plplot[0-9]* | head -1)
  mkdir -p "$out/plplot/drivers" "$out/plplot/data" "$out/fonts"
  cp "$drv"/cairo.* "$out/plplot/drivers/"
  cp -r "$data"/. "$out/plplot/data/"
  ldd "$drv/cairo.so" | awk '$3 ~ /^\// {print $3}' |
    grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -nL "$lib" "$out/lib/"; done
  font=$(fc-match -f '%{file}' sans 2>/dev/null || true)
  [ -n "$font" ] && cp "$font" "$out/fonts/"
  cat >"$out/fonts/fonts.conf" <<'CONF'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir prefix="relative">.</dir><cachedir>/tmp/siam-fontcache</cachedir></fontconfig>
CONF
fi
echo "gpu-bundle: $(ls "$out" | grep -vc lib) binaries, $(ls "$out/lib" | wc -l) libraries, $(du -sh "$out" | cut -f1)"

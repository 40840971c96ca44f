"""Decoding + resizing throughput of 64x64 JPEGs: siam (bench_images) next to OpenCV and
PyTorch's DataLoader, on the same files, in one run.

usage: compare_images.py BENCH_IMAGES [THREADS] [SECONDS]

Writes 512 random-content 64x64 RGB JPEGs (quality 90) to a temporary folder, then measures
images/s for
  siam:    read_jpeg_into (libjpeg-turbo, RGB) + apply_transform (shorter side to 32,
           antialiased bilinear, centre crop, float channel planes)
  siam dct: the same with libjpeg-turbo's DCT scaling (the file decodes to 32x32 inside the
           inverse DCT; the pixels differ a little from a full decode + resize)
  opencv:  cv2.imdecode + cv2.resize to 32x32 (INTER_AREA), on THREADS Python threads
           (OpenCV releases the GIL) over bytes held in memory
  pytorch: torch.utils.data.DataLoader(num_workers=THREADS, batch_size=64) over a Dataset
           that decodes with cv2.imdecode and resizes with F.interpolate(bilinear,
           antialias=True) (torchvision is not in Debian: this is its Resize's resampling)
Reports images/s and the ratios to siam. Run it on an idle machine: on a shared one the
ratios are the figures to read, not the absolute rates.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import cv2

bench, threads = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
SIZE = 32


def opencv_rate(blobs):
    cv2.setNumThreads(1)
    stop = [False]
    counts = [0] * threads

    def work(t):
        i = t
        while not stop[0]:
            img = cv2.imdecode(blobs[i % len(blobs)], cv2.IMREAD_COLOR)
            cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            counts[t] += 1
            i += threads

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for p in pool:
        p.start()
    time.sleep(seconds)
    stop[0] = True
    for p in pool:
        p.join()
    return sum(counts) / (time.perf_counter() - t0)


def torch_rate(blobs):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(1)

    class Jpegs(torch.utils.data.Dataset):
        def __len__(self):
            return 1 << 30

        def __getitem__(self, i):
            torch.set_num_threads(1)
            img = cv2.cvtColor(cv2.imdecode(blobs[i % len(blobs)], cv2.IMREAD_COLOR),
                               cv2.COLOR_BGR2RGB)
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
            return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                                 antialias=True)[0]

    loader = torch.utils.data.DataLoader(Jpegs(), batch_size=64, num_workers=threads)
    it = iter(loader)
    next(it)  # workers started
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it).shape[0]
    rate = n / (time.perf_counter() - t0)
    del it
    return rate


with tempfile.TemporaryDirectory() as d:
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(512):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = cv2.resize(base, (64, 64), interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        open(os.path.join(d, f"{i:04d}.jpg"), "wb").write(buf.tobytes())
        blobs.append(buf)
    def siam_rate(*mode):
        out = subprocess.run([bench, d, str(threads), str(SIZE), str(seconds), *mode],
                             check=True, capture_output=True, text=True).stdout
        return float(out.split()[1])

    siam = siam_rate()
    siam_dct = siam_rate("dct")
    cv = opencv_rate(blobs)
    pt = torch_rate(blobs)
print(f"64x64 JPEG -> {SIZE}x{SIZE}, {threads} thread(s), {seconds:.0f} s each")
print(f"  siam (full decode + antialiased bilinear):   {siam:10.0f} images/s")
print(f"  siam dct (DCT-scaled decode + transform):    {siam_dct:10.0f} images/s")
print(f"  OpenCV (imdecode + resize INTER_AREA):       {cv:10.0f} images/s"
      f"  siam/OpenCV {siam / cv:.2f}  siam dct/OpenCV {siam_dct / cv:.2f}")
if pt is None:
    print("  PyTorch: not installed")
else:
    print(f"  PyTorch DataLoader (cv2 decode + F.interpolate antialias): {pt:10.0f} images/s"
          f"  siam/PyTorch {siam / pt:.2f}  siam dct/PyTorch {siam_dct / pt:.2f}")

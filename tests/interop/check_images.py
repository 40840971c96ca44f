"""Checks siam's image transforms and JPEG decoding with independent implementations.

usage: check_images.py IMAGES_FIXTURE

Resizes (tests/interop/images_fixture.cpp): the area filter against OpenCV's cv2.resize
INTER_AREA (shrinking), bilinear enlargement against cv2.resize INTER_LINEAR, and bilinear
at any scale against PyTorch's F.interpolate(mode="bilinear", antialias=True), the
antialiased resize torchvision uses; all within 1e-5. The JPEG: siam's RGB decode against
cv2.imdecode of the same file, within 2 levels. Exit 77 (skip) when numpy or cv2 cannot be
imported; the PyTorch comparisons are skipped with a message when torch is missing.
"""
import glob
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import cv2
except ImportError as e:
    print("skipped:", e, "for", sys.executable)
    sys.exit(77)
try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
    print("torch is not installed: the antialiased-bilinear comparisons are skipped")

TOL = 1e-5
failures = []
checked = 0
with tempfile.TemporaryDirectory() as d:
    subprocess.run([sys.argv[1], d], check=True)
    for path in sorted(glob.glob(os.path.join(d, "resize_*.bin"))):
        raw = open(path, "rb").read()
        rows, cols, ch, orows, ocols, filt = np.frombuffer(raw[:24], dtype=np.uint32)
        data = np.frombuffer(raw[24:], dtype=np.float32)
        n_in = rows * cols * ch
        img = data[:n_in].reshape(rows, cols, ch)
        ours = data[n_in:].reshape(orows, ocols, ch)
        name = f"{os.path.basename(path)} {rows}x{cols}x{ch} -> {orows}x{ocols} " + (
            "area" if filt else "bilinear")
        refs = []
        shrink = orows <= rows and ocols <= cols
        if filt == 1 and shrink:
            refs.append(("cv2 INTER_AREA", cv2.resize(img, (int(ocols), int(orows)),
                                                      interpolation=cv2.INTER_AREA)))
        if filt == 0 and orows >= rows and ocols >= cols:
            refs.append(("cv2 INTER_LINEAR", cv2.resize(img, (int(ocols), int(orows)),
                                                        interpolation=cv2.INTER_LINEAR)))
        if filt == 0 and torch is not None:
            t = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].double()
            r = F.interpolate(t, size=(int(orows), int(ocols)), mode="bilinear",
                              align_corners=False, antialias=True)
            refs.append(("torch antialias", r[0].permute(1, 2, 0).numpy()))
        for ref_name, ref in refs:
            ref = np.asarray(ref, dtype=np.float64).reshape(orows, ocols, ch)
            err = float(np.abs(ref - ours).max())
            checked += 1
            print(f"{name} vs {ref_name}: max |diff| {err:.2e}")
            if err > TOL:
                failures.append(f"{name} vs {ref_name}: {err}")
    jpeg = np.frombuffer(open(os.path.join(d, "photo.jpg"), "rb").read(), dtype=np.uint8)
    ours = np.frombuffer(open(os.path.join(d, "photo.rgb"), "rb").read(), dtype=np.uint8)
    bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.int32)
    ours = ours.reshape(ref.shape).astype(np.int32)
    err = int(np.abs(ref - ours).max())
    checked += 1
    print(f"photo.jpg vs cv2.imdecode: max |diff| {err} levels")
    if err > 2:
        failures.append(f"photo.jpg vs cv2.imdecode: {err} levels")
if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"images interop: {checked} comparisons passed")

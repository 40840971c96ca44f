"""Writes an MNIST-style IDX data set (MNIST, Fashion-MNIST; raw or .gz) as an image-folder
tree for `mnist_siamese --data`: OUT/train/<label>/<index>.<ext> and OUT/test/<label>/...

usage: make_image_tree.py IDX_DIR OUT [--size S] [--colour] [--format png|jpeg]
                          [--train N] [--test M] [--quality Q]

--size resizes each 28 x 28 image to S x S (OpenCV, bilinear; default 28: the pixels as
they are). --colour writes RGB: each image's grey values times a colour drawn per image
(seeded by its index), so the colour carries no class information. --format jpeg writes
JPEGs of quality Q (default 90). --train / --test keep the first N / M images of each split.
"""
import argparse
import gzip
import os
import struct

import numpy as np
import cv2


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(idx_dir, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(idx_dir, name)
        if os.path.exists(p):
            return p
    raise SystemExit("make_image_tree.py: no %s[.gz] in %s" % (stem, idx_dir))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("idx_dir")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--colour", action="store_true")
    ap.add_argument("--format", choices=("png", "jpeg"), default="png")
    ap.add_argument("--train", type=int, default=0, help="first N training images (0: all)")
    ap.add_argument("--test", type=int, default=0, help="first M test images (0: all)")
    ap.add_argument("--quality", type=int, default=90)
    a = ap.parse_args()
    ext = ".png" if a.format == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, a.quality] if a.format == "jpeg" else []
    for split, prefix, keep in (("train", "train", a.train), ("test", "t10k", a.test)):
        images = read_idx(find(a.idx_dir, prefix + "-images-idx3-ubyte"))
        labels = read_idx(find(a.idx_dir, prefix + "-labels-idx1-ubyte"))
        n = len(labels) if keep <= 0 else min(keep, len(labels))
        for i in range(n):
            img = images[i]
            if a.size != img.shape[0]:
                img = cv2.resize(img, (a.size, a.size), interpolation=cv2.INTER_LINEAR)
            if a.colour:
                rgb = np.random.default_rng(i).uniform(0.3, 1.0, 3)
                img = np.clip(img[:, :, None].astype(np.float64) * rgb[::-1], 0, 255)
                img = img.astype(np.uint8)  # OpenCV writes BGR: the colour reversed
            d = os.path.join(a.out, split, str(int(labels[i])))
            os.makedirs(d, exist_ok=True)
            if not cv2.imwrite(os.path.join(d, "%05d%s" % (i, ext)), img, params):
                raise SystemExit("make_image_tree.py: cannot write into " + d)
        print("%s: %d images" % (split, n))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The LeNet Siamese network of siam's nn::lenet, in PyTorch: a side-by-side step timing and
a quality run on MNIST.

Network (Caffe's mnist_siamese with a 2-D output, He init: normal, std sqrt(2 / fan_in),
zero biases): Conv2d(1->20, 5) - ReLU - MaxPool(2) - Conv2d(20->50, 5) - ReLU - MaxPool(2) -
Flatten - Linear(800->500) - ReLU - Linear(500->2). One step: a stacked batch of 360 images
(180 pairs), contrastive loss (sum, margin 0.3, d = sqrt(|f1 - f2|^2 + 1e-6), as siam's),
Adam(1e-4, (0.9, 0.99), 1e-8).

    python3 bench/pytorch_cnn.py time [--threads 2 --steps 100]     # JSON: ms per step
    python3 bench/pytorch_cnn.py quality --mnist DIR --seed 0         # JSON: kNN, precision@9

`quality` trains on the first 5000 images of DIR/t10k-images-idx3-ubyte(.gz) and tests on
the last 5000, 3000 iterations of 180 balanced pairs (half same class), then reports the
test set's kNN accuracy (k = 5, neighbours among the training embeddings, ties by smaller
summed distance, then smaller label) and precision@9 (the 9 nearest other test images), as
siam's metrics.hpp computes them. Run PyTorch at its best on the CPU: bench/compare_cnn.sh
sets LD_PRELOAD to tcmalloc and puts the OpenMP OpenBLAS first.
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

PAIRS = 180
MARGIN = 0.3


def make_net(embedding=2):
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, embedding))
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


def contrastive_loss(f1, f2, y, margin=MARGIN):
    d = torch.sqrt(torch.sum((f1 - f2) ** 2, dim=1) + 1e-6)
    return torch.sum(y * d**2 + (1 - y) * torch.clamp(margin - d, min=0) ** 2)


def make_opt(net):
    return torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8)


def train_step(net, opt, x, y):
    opt.zero_grad(set_to_none=True)
    f = net(x)
    loss = contrastive_loss(f[:PAIRS], f[PAIRS:], y)
    loss.backward()
    opt.step()
    return loss.item()


def cmd_time(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = make_net()
    opt = make_opt(net)
    x = torch.rand(2 * PAIRS, 1, 28, 28, generator=gen)
    y = (torch.arange(PAIRS) % 2).float()
    for _ in range(args.warmup):
        train_step(net, opt, x, y)
    times = []
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        train_step(net, opt, x, y)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__,
        "ms_per_step": 1e3 * total / args.steps, "ms_median": 1e3 * statistics.median(times),
        "ms_min": 1e3 * min(times), "steps": args.steps, "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    sys.exit(f"pytorch_cnn.py: no {stem}(.gz) in {directory}")


def knn_accuracy(train, train_lab, test, test_lab, k=5):
    d2 = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)  # [n_test, n_train]
    idx = np.lexsort((np.broadcast_to(np.arange(train.shape[0]), d2.shape), d2), axis=1)[:, :k]
    hits = 0
    for t in range(test.shape[0]):
        votes, dist = np.zeros(256), np.zeros(256)
        for i in idx[t]:
            votes[train_lab[i]] += 1
            dist[train_lab[i]] += np.sqrt(d2[t, i])
        best = 0
        for l in range(1, 256):
            if votes[l] > votes[best] or (votes[l] == votes[best] and votes[l] > 0 and dist[l] < dist[best]):
                best = l
        hits += best == test_lab[t]
    return hits / test.shape[0]


def precision_at_k(emb, lab, k=9):
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    n = emb.shape[0]
    idx = np.lexsort((np.broadcast_to(np.arange(n), d2.shape), d2), axis=1)[:, :k]
    return float(np.mean((lab[idx] == lab[:, None]).mean(axis=1)))


def sample_pairs(rng, by_class, n):
    first, second, same = [], [], []
    classes = [c for c in range(10) if len(by_class[c]) >= 2]
    for i in range(n):
        if i < n // 2:  # similar: two different images of one class
            c = classes[rng.integers(len(classes))]
            a, b = rng.choice(by_class[c], 2, replace=False)
            same.append(1.0)
        else:  # dissimilar: two different classes
            c1, c2 = rng.choice(classes, 2, replace=False)
            a, b = rng.choice(by_class[c1]), rng.choice(by_class[c2])
            same.append(0.0)
        first.append(a)
        second.append(b)
    return np.array(first), np.array(second), np.array(same, dtype=np.float32)


def cmd_quality(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = read_idx(find(args.mnist, "t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = read_idx(find(args.mnist, "t10k-labels-idx1-ubyte")).astype(np.int64)
    n = images.shape[0] // 2
    tr_x, tr_y = torch.from_numpy(images[:n].reshape(-1, 1, 28, 28).copy()), labels[:n]
    te_x, te_y = torch.from_numpy(images[n:].reshape(-1, 1, 28, 28).copy()), labels[n:]
    by_class = [np.flatnonzero(tr_y == c) for c in range(10)]
    net = make_net()
    opt = make_opt(net)
    t0 = time.perf_counter()
    for it in range(args.iterations):
        a, b, y = sample_pairs(rng, by_class, args.pairs)
        x = torch.cat([tr_x[a], tr_x[b]])
        train_step(net, opt, x, torch.from_numpy(y))
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        e_tr = net(tr_x).numpy().astype(np.float64)
        e_te = net(te_x).numpy().astype(np.float64)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "seed": args.seed,
        "iterations": args.iterations, "pairs": args.pairs,
        "knn_accuracy_k5": knn_accuracy(e_tr, tr_y, e_te, te_y, 5),
        "precision_at_9": precision_at_k(e_te, te_y, 9),
        "train_seconds": train_s,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--steps", type=int, default=100)
    q = sub.add_parser("quality")
    q.add_argument("--mnist", required=True, help="directory with t10k-images/labels IDX files")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--iterations", type=int, default=3000)
    q.add_argument("--pairs", type=int, default=PAIRS)
    args = ap.parse_args()
    cmd_time(args) if args.cmd == "time" else cmd_quality(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

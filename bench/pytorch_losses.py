#!/usr/bin/env python3
"""The mnist_siamese example's training with each of siam's losses, in PyTorch: a quality
reference for every loss, on the same data split and seeds as siam's runs.

Setup as siam's SiameseConfig builds it (include/siam/train/siamese_trainer.hpp): the MLP
784-1024-ReLU-1024-ReLU-2 (He init: normal, std sqrt(2 / fan_in), zero biases),
Adam(1e-4, (0.9, 0.99), 1e-8), 3000 iterations, 360 images per step for every loss:

  loss         batch (sampler)                                    loss
  contrastive  180 pairs, each similar with probability 1/2       0.5 SUM y d^2 + (1-y) max(m-d,0)^2
  triplet      120 random triplets (anchor, positive, negative)   mean max(d_ap - d_an + m, 0)
  batch-hard   P x K = 10 classes x 36 distinct images            mean_a max(d_ap* - d_an* + m, 0)
  batch-all    the same                                           SUM over active / number active
  ntxent       180 positive pairs (two images of one class)       SimCLR's NT-Xent, temperature 0.1

with margin m = 0.3 and d = sqrt(|x - y|^2 + 1e-6) (the mining losses: from the pairwise
matrix max(|a|^2 + |b|^2 - 2<a, b>, 0), as siam's pairwise_sq_distances). The samplers draw
from the same distributions as siam's (data/pairs.hpp, triplets.hpp, pk_sampler.hpp) with
NumPy's generator, so the batches are not siam's bit for bit.

Data: a directory of MNIST-style IDX files, split as siam's load_mnist_dir does: with the
train files, the first 5000 images of train-images train and the first 5000 of t10k test;
with only the t10k files, its first 5000 train and the next 5000 test. Pixels / 255.

Metrics as siam's metrics.hpp computes them: kNN accuracy (k = 5; each test embedding takes
the majority label of its 5 nearest training embeddings, neighbours ordered by (distance,
index), a tie in votes going to the smaller summed distance, then the smaller label) and
precision@9 (the 9 nearest other test embeddings), distances in double precision.

    /usr/bin/python3 bench/pytorch_losses.py --data DIR --loss batch-hard --seed 0
    /usr/bin/python3 bench/pytorch_losses.py --data DIR --all --seeds 0,1,2 >> results.jsonl
    /usr/bin/python3 bench/pytorch_losses.py --data DIR --all --iterations 20   # smoke test

One JSON line per run: loss, seed, knn5, p9, seconds (training), and the run's settings.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_pytorch import make_net  # noqa: E402  784-1024-1024-2, He init, zero biases
from pytorch_cnn import read_idx  # noqa: E402  IDX (optionally gzipped) to a NumPy array

LOSSES = ("contrastive", "triplet", "batch-hard", "batch-all", "ntxent")
EPS = 1e-6  # inside every Euclidean distance's square root, as siam's losses


# ---- data -------------------------------------------------------------------------------


def find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def load_split(directory, train_size=5000, test_size=5000):
    """(train images, train labels, test images, test labels, note), as load_mnist_dir."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    tri, trl, tei, tel = (find_idx(directory, n) for n in names)
    missing = [n for n, p in zip(names, (tri, trl, tei, tel)) if p is None and
               (n.startswith("t10k") or tri or trl)]
    if missing:
        sys.exit(f"pytorch_losses.py: {directory}: missing " + ", ".join(m + "[.gz]" for m in missing))

    def pair(images, labels, start, count):
        x = read_idx(images)
        y = read_idx(labels)
        if x.shape[0] != y.shape[0]:
            sys.exit(f"pytorch_losses.py: {images} holds {x.shape[0]} images, {labels} {y.shape[0]} labels")
        if start + count > x.shape[0]:
            sys.exit(f"pytorch_losses.py: {start + count} images asked of {images} ({x.shape[0]})")
        x = x[start:start + count].reshape(count, -1).astype(np.float32) / np.float32(255.0)
        return x, y[start:start + count].astype(np.int64)

    if tri:
        xtr, ytr = pair(tri, trl, 0, train_size)
        xte, yte = pair(tei, tel, 0, test_size)
        note = f"train: first {train_size} of train-images; test: first {test_size} of t10k"
    else:
        xtr, ytr = pair(tei, tel, 0, train_size)
        xte, yte = pair(tei, tel, train_size, test_size)
        note = f"only t10k: images 0..{train_size - 1} train, {train_size}..{train_size + test_size - 1} test"
    return xtr, ytr, xte, yte, note


class ClassIndex:
    """The images of each class, classes in ascending label order (siam's ClassIndex)."""

    def __init__(self, labels):
        self.labels = np.unique(labels)
        self.members = [np.flatnonzero(labels == c) for c in self.labels]
        self.counts = np.array([len(m) for m in self.members])
        order = np.concatenate(self.members)
        self.order = order
        self.start = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def image(self, cls, j):
        """Image j (array) of class cls (array of class positions)."""
        return self.order[self.start[cls] + j]


# ---- samplers: the distributions of siam's data/pairs.hpp, triplets.hpp, pk_sampler.hpp --


def two_distinct(rng, ci, cls):
    """Two different uniform images of each class in `cls`."""
    n = ci.counts[cls]
    a = rng.integers(0, n)
    b = rng.integers(0, n - 1)
    b = b + (b >= a)
    return ci.image(cls, a), ci.image(cls, b)


def sample_pairs(rng, ci, n):
    """PairSampler::sample: each pair similar with probability 1/2; a similar pair: a uniform
    class, two different images of it; a dissimilar one: two different uniform classes, a
    uniform image of each. Rows [first; second], pair labels (1 = similar)."""
    k = len(ci.labels)
    similar = rng.random(n) < 0.5
    first = np.empty(n, np.int64)
    second = np.empty(n, np.int64)
    ns = int(similar.sum())
    c = rng.integers(0, k, ns)
    first[similar], second[similar] = two_distinct(rng, ci, c)
    nd = n - ns
    ca = rng.integers(0, k, nd)
    cb = rng.integers(0, k - 1, nd)
    cb = cb + (cb >= ca)
    first[~similar] = ci.image(ca, rng.integers(0, ci.counts[ca]))
    second[~similar] = ci.image(cb, rng.integers(0, ci.counts[cb]))
    return np.concatenate([first, second]), similar.astype(np.float32)


def sample_positive_pairs(rng, ci, n):
    """PairSampler::sample_positive: n pairs of two different images of a uniform class."""
    first, second = two_distinct(rng, ci, rng.integers(0, len(ci.labels), n))
    return np.concatenate([first, second])


def sample_triplets(rng, ci, n):
    """TripletSampler::sample: an anchor class among those with two images or more, two
    different images of it, a uniform other class and a uniform image of it."""
    anchor_classes = np.flatnonzero(ci.counts >= 2)
    c = anchor_classes[rng.integers(0, len(anchor_classes), n)]
    a, p = two_distinct(rng, ci, c)
    cn = rng.integers(0, len(ci.labels) - 1, n)
    cn = cn + (cn >= c)
    q = ci.image(cn, rng.integers(0, ci.counts[cn]))
    return np.concatenate([a, p, q])


def sample_pk(rng, ci, p, k):
    """PKSampler::sample without replacement: P distinct uniform classes, K distinct uniform
    images of each, class after class. Rows and their labels."""
    classes = rng.choice(len(ci.labels), p, replace=False)
    rows = np.concatenate([ci.members[c][rng.choice(ci.counts[c], k, replace=False)] for c in classes])
    return rows, np.repeat(ci.labels[classes], k)


def pk_size(num_classes, pairs):
    """SiameseTrainer::pk_size: all classes up to `pairs`, K to fill 2 * pairs images."""
    p = max(2, min(num_classes, pairs))
    return p, max(2, 2 * pairs // p)


# ---- losses: siam's loss/*.hpp ---------------------------------------------------------


def contrastive(f, y, margin):
    n = f.shape[0] // 2
    d = torch.sqrt(((f[:n] - f[n:]) ** 2).sum(1) + EPS)
    return 0.5 * torch.sum(y * d**2 + (1 - y) * torch.relu(margin - d) ** 2)


def triplet(f, margin):
    n = f.shape[0] // 3
    a, p, q = f[:n], f[n:2 * n], f[2 * n:]
    dap = torch.sqrt(((a - p) ** 2).sum(1) + EPS)
    dan = torch.sqrt(((a - q) ** 2).sum(1) + EPS)
    return torch.relu(dap - dan + margin).mean()


def distance_matrix(e):
    """sqrt(max(|a_i|^2 + |a_j|^2 - 2 <a_i, a_j>, 0) + 1e-6): siam's pairwise_sq_distances
    (one GEMM, clamped by a ReLU) and the Euclidean distance on top."""
    sq = (e * e).sum(1)
    q = torch.relu(sq[:, None] + sq[None, :] - 2 * (e @ e.t()))
    return torch.sqrt(q + EPS)


def batch_hard(e, labels, margin):
    d = distance_matrix(e)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    hardest_pos = torch.where(same & ~eye, d, torch.full_like(d, -np.inf)).max(1).values
    hardest_neg = torch.where(~same, d, torch.full_like(d, np.inf)).min(1).values
    return torch.relu(hardest_pos - hardest_neg + margin).mean()


def batch_all(e, labels, margin):
    """Every valid triplet (a, p, n); the hinge summed over them and divided by the number of
    active ones (a constant of the step, as in siam). Equal class counts (a P x K batch) let
    the positives and negatives of every anchor be gathered into two rectangular tables."""
    d = distance_matrix(e)
    m = len(labels)
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~torch.eye(m, dtype=torch.bool)
    neg_mask = ~same
    npos, nneg = pos_mask.sum(1), neg_mask.sum(1)
    if bool((npos != npos[0]).any()) or bool((nneg != nneg[0]).any()):
        x = d[:, :, None] - d[:, None, :] + margin  # general case: [m, m, m]
        valid = pos_mask[:, :, None] & neg_mask[:, None, :]
        terms = torch.relu(x[valid])
    else:
        pos_idx = torch.nonzero(pos_mask)[:, 1].view(m, -1)  # row-major: grouped by anchor
        neg_idx = torch.nonzero(neg_mask)[:, 1].view(m, -1)
        dap = d.gather(1, pos_idx)
        dan = d.gather(1, neg_idx)
        terms = torch.relu(dap[:, :, None] - dan[:, None, :] + margin)
    if terms.numel() == 0:
        raise ValueError("batch_all: the batch holds no valid triplet")
    active = int((terms > 0).sum())
    return terms.sum() / max(active, 1)


def ntxent(z, temperature):
    m = z.shape[0]
    n = m // 2
    zn = torch.nn.functional.normalize(z, dim=1, eps=1e-12)
    sim = (zn @ zn.t()) * (1.0 / temperature)
    masked = sim + torch.diag(torch.full((m,), -1e9))
    lse = torch.logsumexp(masked, dim=1)
    partner = (torch.arange(m) + n) % m
    return (lse - sim[torch.arange(m), partner]).mean()


# ---- metrics: siam's metrics.hpp -------------------------------------------------------


def _k_nearest(query, base, k, skip_self, chunk=500):
    """For each query row, the indices and squared distances of its k nearest base rows,
    ordered by (distance, index); with skip_self, row i of query (= base) skips itself.
    Squared distances in double, summed over the coordinates in order (as siam's sq_dist)."""
    q64, b64 = query.astype(np.float64), base.astype(np.float64)
    nq, nb = q64.shape[0], b64.shape[0]
    out_i = np.empty((nq, k), np.int64)
    out_d = np.empty((nq, k), np.float64)
    cols = np.arange(nb)
    for s in range(0, nq, chunk):
        diff = q64[s:s + chunk, None, :] - b64[None, :, :]
        d2 = np.zeros(diff.shape[:2])
        for j in range(diff.shape[2]):
            d2 += diff[:, :, j] * diff[:, :, j]
        if skip_self:
            r = np.arange(d2.shape[0])
            d2[r, s + r] = np.inf
        # The k-th smallest value; every row at or below it is a candidate, then an exact
        # (distance, index) sort of the candidates (ties at the boundary resolved by index).
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1:k]
        for r in range(d2.shape[0]):
            cand = np.flatnonzero(d2[r] <= kth[r])
            order = np.lexsort((cols[cand], d2[r, cand]))[:k]
            out_i[s + r] = cand[order]
            out_d[s + r] = d2[r, cand[order]]
    return out_i, out_d


def knn_accuracy(train, train_lab, test, test_lab, k=5):
    idx, d2 = _k_nearest(test, train, k, skip_self=False)
    labels = train_lab[idx]  # [n_test, k]
    n = test.shape[0]
    nl = int(max(train_lab.max(), test_lab.max())) + 1
    votes = np.zeros((n, nl), np.int64)
    dist = np.zeros((n, nl), np.float64)
    rows = np.arange(n)
    for r in range(k):  # in neighbour order, as siam accumulates
        votes[rows, labels[:, r]] += 1
        dist[rows, labels[:, r]] += np.sqrt(d2[:, r])
    # Most votes, then the smallest summed distance, then the smallest label.
    top = votes == votes.max(1, keepdims=True)
    dmask = np.where(top, dist, np.inf)
    cand = top & (dmask == dmask.min(1, keepdims=True))
    best = np.argmax(cand, axis=1)
    return float(np.mean(best == test_lab))


def precision_at_k(emb, lab, k=9):
    idx, _ = _k_nearest(emb, emb, k, skip_self=True)
    frac = (lab[idx] == lab[:, None]).sum(axis=1) / k
    return sum(frac.tolist()) / emb.shape[0]  # a serial sum in row order, as siam's


# ---- one run ---------------------------------------------------------------------------


def run(args, data, loss_name, seed):
    xtr, ytr, xte, yte, note = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ci = ClassIndex(ytr)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    images = torch.from_numpy(xtr)
    labels_t = torch.from_numpy(ytr)
    pairs = args.pairs
    p, k = pk_size(len(ci.labels), pairs)
    losses = []
    t0 = time.perf_counter()
    for it in range(args.iterations):
        if loss_name == "contrastive":
            rows, y = sample_pairs(rng, ci, pairs)
            compute = lambda f, y=torch.from_numpy(y): contrastive(f, y, args.margin)  # noqa: E731
        elif loss_name == "triplet":
            rows = sample_triplets(rng, ci, 2 * pairs // 3)
            compute = lambda f: triplet(f, args.margin)  # noqa: E731
        elif loss_name == "ntxent":
            rows = sample_positive_pairs(rng, ci, pairs)
            compute = lambda f: ntxent(f, args.temperature)  # noqa: E731
        else:
            rows, _ = sample_pk(rng, ci, p, k)
            lab = labels_t[torch.from_numpy(rows)]
            fn = batch_hard if loss_name == "batch-hard" else batch_all
            compute = lambda f, lab=lab, fn=fn: fn(f, lab, args.margin)  # noqa: E731
        opt.zero_grad(set_to_none=True)
        loss = compute(net(images[torch.from_numpy(rows)]))
        value = loss.item()
        if not np.isfinite(value):
            return {"loss": loss_name, "seed": seed, "error": f"loss {value} at iteration {it + 1}"}
        loss.backward()
        opt.step()
        losses.append(value)
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        etr = net(images).numpy()
        ete = net(torch.from_numpy(xte)).numpy()
    t1 = time.perf_counter()
    knn5 = knn_accuracy(etr, ytr, ete, yte, 5)
    p9 = precision_at_k(ete, yte, 9)
    tail = losses[-100:]
    return {
        "framework": "pytorch", "loss": loss_name, "seed": seed,
        "knn5": knn5, "p9": p9, "seconds": round(train_s, 2),
        "eval_seconds": round(time.perf_counter() - t1, 2),
        "iterations": args.iterations, "images_per_step": int(len(rows)),
        "last100_mean_loss": float(np.mean(tail)) if tail else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "data": note,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="directory of MNIST-style IDX files")
    ap.add_argument("--loss", choices=LOSSES, default="contrastive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all", action="store_true", help="every loss of --losses for every seed of --seeds")
    ap.add_argument("--losses", default=",".join(LOSSES), help="with --all (comma-separated)")
    ap.add_argument("--seeds", default="0", help="with --all (comma-separated)")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--pairs", type=int, default=180, help="2 * pairs images per step")
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train-size", type=int, default=5000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.iterations < 0 or args.pairs < 2 or args.threads < 1:
        ap.error("--iterations must be >= 0, --pairs >= 2, --threads >= 1")
    torch.set_num_threads(args.threads)
    if args.all:
        losses = [s.strip() for s in args.losses.split(",") if s.strip()]
        bad = [s for s in losses if s not in LOSSES]
        if bad:
            ap.error(f"--losses: unknown {bad}; expected some of {', '.join(LOSSES)}")
        runs = [(l, int(s)) for s in args.seeds.split(",") for l in losses]
    else:
        runs = [(args.loss, args.seed)]
    data = load_split(args.data, args.train_size, args.test_size)
    failed = 0
    for loss_name, seed in runs:
        result = run(args, data, loss_name, seed)
        failed += "error" in result
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

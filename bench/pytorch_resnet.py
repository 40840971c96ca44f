#!/usr/bin/env python3
"""The ResNet Siamese network of siam's nn::resnet (`mnist_siamese --arch resnet`), in
PyTorch: a side-by-side step timing (bench/compare_resnet.sh runs it next to bench_resnet), and
the example's training with the batch-all loss as a quality reference
(bench/compare_resnet_quality.sh runs it next to the example).

Network (nn::resnet_specs(Shape{1, 28, 28}, width, embedding)): Conv2d(1->w, 3, pad 1, no
bias) - BatchNorm2d - ReLU; three stages of two basic blocks at w, 2w, 4w channels (conv3x3
BN ReLU conv3x3 BN, plus the shortcut: identity, or conv1x1 stride 2 + BN at the start of
stages 2 and 3; then ReLU); global average pooling; Linear(4w -> embedding); L2
normalisation (x / max(|x|, 1e-12)). He initialisation (normal, std sqrt(2 / fan_in)), zero
biases, BN weight 1 and bias 0, momentum 0.1, eps 1e-5.

time: one step is a stacked batch of 2 x PAIRS images in training mode, contrastive loss
(sum, margin 0.3, d = sqrt(|f1 - f2|^2 + 1e-6), as siam's), Adam(1e-4, (0.9, 0.99), 1e-8).

    python3 bench/pytorch_resnet.py time [--threads 2 --steps 20 --pairs 180]   # JSON

train: `mnist_siamese --arch resnet --loss batch-all` with the same options and defaults
(examples/mnist_siamese/options.hpp, SiameseTrainer):
  data     load_mnist_dir's split: the first --train-size images of train-images and the
           first --test-size of t10k (only t10k files: its first --train-size train, the
           next --test-size test); pixels byte / 255, nothing else
  batches  P x K without replacement: P = max(2, min(classes, --batch-pairs)) distinct
           classes, K = max(2, 2 --batch-pairs / P) distinct images of each (10 x 36 = 360
           images for 180 pairs), one forward pass over the batch in training mode (BN
           batch statistics); NumPy's generator, siam's distribution
  loss     batch-all: every (a, p, n) with label p = label a != label n, p != a;
           SUM max(d_ap - d_an + margin, 0) / (number of triplets with a positive term),
           d = sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0) + 1e-6); zero-loss triplets count neither
           in the sum nor in the denominator (max(active, 1))
  update   Adam(--lr, (--beta1, --beta2), 1e-8), the rate set before each step from the
           schedule (constant, cosine, step or a full spec, --warmup: optim/schedule.hpp)
  metrics  the test set's embeddings (eval mode: BN running statistics) against themselves,
           each query's own row left out, as siam::search::accuracy: precision@1, R-precision
           and MAP@R over the queries whose class has another test image, R not capped,
           float distances max(|q|^2 + |g|^2 - 2 q.g, 0), ties to the smaller index

    python3 bench/pytorch_resnet.py train --data DIR --seed 0 --iterations 3000   # JSON line

check: recomputes the retrieval metrics from an example run's embedding.csv (the test
embeddings) and compares them with its metrics.json; with --weights (the run's model
exported by `mnist_siamese export --safetensors`) and --data, also embeds the test images
with this network and compares the embeddings. selftest: the metrics on hand-computed cases.

    python3 bench/pytorch_resnet.py check --run OUT_DIR [--weights F --data DIR]

Run PyTorch at its best on the CPU: bench/compare_resnet.sh sets LD_PRELOAD to tcmalloc and
puts the OpenMP OpenBLAS first; PyTorch's CPU convolutions run on its own oneDNN (mkldnn).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MARGIN = 0.3


class Residual(nn.Module):
    """relu(body(x) + projection(x)); names as siam's safetensors (body.<i>, projection.<i>)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        project = stride != 1 or cin != cout
        self.projection = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)) if project else nn.Sequential()

    def forward(self, x):
        return self.body(x) + (self.projection(x) if len(self.projection) else x)


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class L2Normalize(nn.Module):
    def forward(self, x):
        return nn.functional.normalize(x, dim=1, eps=1e-12)


def make_net(width=32, embedding=64, channels=1):
    layers = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for stage in range(3):
        out = width << stage
        for block in range(2):
            layers += [Residual(c, out, 2 if stage > 0 and block == 0 else 1), nn.ReLU()]
            c = out
    layers += [GlobalAvgPool(), nn.Linear(c, embedding), L2Normalize()]
    net = nn.Module()
    net.layers = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    net.forward = lambda x: net.layers(x)
    return net


def contrastive_loss(f1, f2, y, margin=MARGIN):
    d = torch.sqrt(torch.sum((f1 - f2) ** 2, dim=1) + 1e-6)
    return torch.sum(y * d**2 + (1 - y) * torch.clamp(margin - d, min=0) ** 2)


def cmd_time(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = make_net(args.width, args.embedding)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    pairs = args.pairs
    x = torch.rand(2 * pairs, 1, 28, 28, generator=gen)
    y = (torch.arange(pairs) % 2).float()

    def step():
        opt.zero_grad(set_to_none=True)
        f = net(x)
        loss = contrastive_loss(f[:pairs], f[pairs:], y)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    cpu_total = time.process_time() - cpu_start
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "network": "resnet",
        "width": args.width, "embedding": args.embedding, "pairs": pairs,
        "ms_per_step": 1e3 * total / args.steps, "ms_median": 1e3 * statistics.median(times),
        "ms_min": 1e3 * min(times), "cpu_ms_per_step": 1e3 * cpu_total / args.steps, "steps": args.steps, "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }))


# ---- train: the example's `--arch resnet --loss batch-all` run -----------------------------


def retrieval_metrics(emb, labels, chunk=512):
    """siam::search::accuracy of one set against itself (search/accuracy.hpp): for a query
    of label y, R = the other rows labelled y, rel(i) = 1 when its i-th nearest other row is
    labelled y; precision@1 = rel(1), R-precision = (1/R) sum_{i<=R} rel(i), MAP@R = (1/R)
    sum_{i<=R} rel(i) P(i); means over the queries with R > 0 (every metric 0 when none has).
    Distances as siam's: float, max(|q|^2 + |g|^2 - 2 q.g, 0); neighbours ordered by
    (distance, index). Only the GEMM's order of summation differs from siam's, which can swap
    neighbours whose distances differ in the last bit.
    emb: [n, D] float32 tensor; labels: [n] int64 tensor."""
    emb = emb.to(torch.float32).contiguous()
    labels = labels.to(torch.int64)
    n = emb.shape[0]
    if not bool(torch.isfinite(emb).all()):
        raise ValueError("retrieval_metrics: the embeddings hold NaN or Inf")
    # Squared norms summed in coordinate order, in float (search/exact.hpp's squared_norms):
    # a pairwise sum rounds differently and reorders more near-ties.
    norms = torch.zeros(n, dtype=torch.float32)
    for j in range(emb.shape[1]):
        norms = norms + emb[:, j] * emb[:, j]
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    R = counts[inverse] - 1
    r_max = int(R.max()) if n else 0
    p1 = torch.zeros(n, dtype=torch.float64)
    rp = torch.zeros(n, dtype=torch.float64)
    ap = torch.zeros(n, dtype=torch.float64)
    if r_max > 0:
        ranks = torch.arange(1, r_max + 1, dtype=torch.float64)
        for q0 in range(0, n, chunk):
            q1 = min(n, q0 + chunk)
            d = torch.clamp(norms[q0:q1, None] + norms[None, :] + (-2.0) * (emb[q0:q1] @ emb.t()), min=0)
            rows = torch.arange(q1 - q0)
            d[rows, q0 + rows] = float("inf")  # the query itself, ranked last and never read
            order = torch.sort(d, dim=1, stable=True).indices[:, :r_max]
            rel = (labels[order] == labels[q0:q1, None]).to(torch.float64)
            r = R[q0:q1].to(torch.float64)
            within = ranks[None, :] <= r[:, None]
            rel = rel * within
            hits = torch.cumsum(rel, dim=1)
            p1[q0:q1] = rel[:, 0]
            safe = torch.clamp(r, min=1)
            rp[q0:q1] = rel.sum(1) / safe
            ap[q0:q1] = (rel * hits / ranks[None, :]).sum(1) / safe
    scored = R > 0
    m = int(scored.sum())
    if m == 0:
        return {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0, "queries": 0, "lone_queries": n}
    # Sums in query order, as siam's.
    return {"precision_at_1": sum(p1[scored].tolist()) / m, "r_precision": sum(rp[scored].tolist()) / m,
            "map_at_r": sum(ap[scored].tolist()) / m, "queries": m, "lone_queries": n - m}


def lr_schedule(spec, lr, warmup, iterations):
    """SiameseConfig::make_schedule (train/siamese_trainer.hpp) and optim::Schedule::parse:
    the learning rate of 0-based step s, as a function."""
    horizon = max(iterations, warmup + 1)

    def warm(s, base, w):
        return base * (s + 1) / w

    def constant(base, w):
        return lambda s: warm(s, base, w) if s < w else base

    def step(base, every, gamma, w):
        return lambda s: warm(s, base, w) if s < w else base * gamma ** ((s - w) // every)

    def exp(base, gamma, w):
        return lambda s: warm(s, base, w) if s < w else base * gamma ** (s - w)

    def cosine(base, total, min_lr, w):
        if total <= w:
            raise ValueError(f"schedule {spec!r}: total must be > warmup, got total {total}, warmup {w}")
        if not 0 <= min_lr <= base:
            raise ValueError(f"schedule {spec!r}: min_lr must be in [0, lr], got {min_lr} with lr {base}")

        def f(s):
            if s < w:
                return warm(s, base, w)
            if s >= total:
                return min_lr
            return min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w)))
        return f

    if spec == "constant":
        return constant(lr, warmup)
    if spec == "cosine":
        return cosine(lr, horizon, 0.0, warmup)
    if spec == "step":
        return step(lr, max(1, horizon // 2), 0.1, warmup)
    kind, _, rest = spec.partition(":")
    if kind not in ("constant", "step", "exp", "cosine"):
        raise ValueError(f"schedule {spec!r}: unknown kind {kind!r} (expected constant, step, exp or cosine)")
    keys = {"lr": lr, "warmup": 0, "gamma": None, "every": None, "total": None, "min_lr": 0.0}
    allowed = {"constant": set(), "step": {"gamma", "every"}, "exp": {"gamma"}, "cosine": {"total", "min_lr"}}[kind]
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"schedule {spec!r}: expected key=value, got {item!r}")
        if key not in {"lr", "warmup"} | allowed:
            raise ValueError(f"schedule {spec!r}: unknown key {key!r} for kind {kind!r}")
        keys[key] = int(value) if key in ("warmup", "every", "total") else float(value)
    for key, need in (("every", kind == "step"), ("gamma", kind == "exp"), ("total", kind == "cosine")):
        if need and keys[key] is None:
            raise ValueError(f"schedule {spec!r}: needs {key}=")
    if kind == "constant":
        return constant(keys["lr"], keys["warmup"])
    if kind == "step":
        return step(keys["lr"], keys["every"], 0.1 if keys["gamma"] is None else keys["gamma"], keys["warmup"])
    if kind == "exp":
        return exp(keys["lr"], keys["gamma"], keys["warmup"])
    return cosine(keys["lr"], keys["total"], keys["min_lr"], keys["warmup"])


def embed(net, images, batch=250):
    """The embeddings of `images` [n, 1, 28, 28] in eval mode (BN running statistics)."""
    was = net.training
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(images[b:b + batch]) for b in range(0, images.shape[0], batch)])
    net.train(was)
    return out


def cmd_train(args):
    from pytorch_losses import ClassIndex, batch_all, load_split, pk_size, sample_pk

    wall0 = time.perf_counter()
    torch.set_num_threads(args.threads if args.threads > 0 else os.cpu_count())
    xtr, ytr, xte, yte, note = load_split(args.data, args.train_size, args.test_size)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ci = ClassIndex(ytr)
    p, k = pk_size(len(ci.labels), args.batch_pairs)
    if len(ci.labels) < p:
        sys.exit(f"pytorch_resnet.py: P = {p} classes per batch, but the labels hold {len(ci.labels)}")
    for label, count in zip(ci.labels, ci.counts):
        if count < k:
            sys.exit(f"pytorch_resnet.py: class {label} has {count} image(s), fewer than K = {k}")
    images = torch.from_numpy(xtr).view(-1, 1, 28, 28)
    labels = torch.from_numpy(ytr)
    net = make_net(args.width, args.embedding)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    lr_at = lr_schedule(args.schedule, args.lr, args.warmup, args.iterations)
    losses = []
    train_s = 0.0
    for it in range(args.iterations):
        t0 = time.perf_counter()
        rows, _ = sample_pk(rng, ci, p, k)
        rows = torch.from_numpy(rows)
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        opt.zero_grad(set_to_none=True)
        loss = batch_all(net(images[rows]), labels[rows], args.margin)
        value = loss.item()
        if not math.isfinite(value):
            print(json.dumps({"framework": "pytorch", "seed": args.seed,
                              "error": f"loss {value} at iteration {it + 1}"}), flush=True)
            return 1
        loss.backward()
        opt.step()
        train_s += time.perf_counter() - t0
        losses.append(value)
    t1 = time.perf_counter()
    m = retrieval_metrics(embed(net, torch.from_numpy(xte).view(-1, 1, 28, 28)), torch.from_numpy(yte))
    print(json.dumps({
        "framework": "pytorch", "arch": "resnet", "loss": "batch-all", "seed": args.seed,
        "iterations": args.iterations, "precision_at_1": m["precision_at_1"], "map_at_r": m["map_at_r"],
        "r_precision": m["r_precision"], "seconds": round(train_s, 3),
        "ms_per_iteration": 1e3 * train_s / args.iterations if args.iterations else None,
        "eval_seconds": round(time.perf_counter() - t1, 3), "wall_seconds": round(time.perf_counter() - wall0, 3),
        "last100_mean_loss": float(np.mean(losses[-100:])) if losses else None,
        "p": p, "k": k, "batch_pairs": args.batch_pairs, "margin": args.margin, "lr": args.lr,
        "beta1": args.beta1, "beta2": args.beta2, "schedule": args.schedule, "warmup": args.warmup,
        "train_size": len(ytr), "test_size": len(yte), "queries": m["queries"],
        "threads": torch.get_num_threads(), "torch": torch.__version__, "data": note,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }), flush=True)
    return 0


# ---- check: the metrics (and the network) against an example run ---------------------------


def read_embedding_csv(path):
    """embedding.csv of mnist_siamese (index,label,e0..): (embeddings float32, labels int64)."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        if header[:2] != ["index", "label"]:
            sys.exit(f"pytorch_resnet.py: {path}: not an embedding.csv (header {header[:2]})")
        data = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    # %.9g round-trips a float exactly
    return torch.from_numpy(data[:, 2:].astype(np.float32)), torch.from_numpy(data[:, 1].astype(np.int64))


def cmd_check(args):
    emb, lab = read_embedding_csv(os.path.join(args.run, "embedding.csv"))
    with open(os.path.join(args.run, "metrics.json")) as f:
        siam = json.load(f)
    mine = retrieval_metrics(emb, lab)
    worst = 0.0
    failed = False
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        diff = abs(mine[key] - siam[key])
        worst = max(worst, diff)
        print(f"{key}: siam {siam[key]:.10g}, pytorch_resnet.py {mine[key]:.10g}, |difference| {diff:.3g}")
    if worst > args.tolerance:
        print(f"FAIL: the metrics differ by {worst:.3g} > {args.tolerance:g}")
        failed = True
    if args.weights:
        from pytorch_losses import load_split
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "interop"))
        from check_resnet import read_safetensors
        state = read_safetensors(args.weights)
        net = make_net(args.width, emb.shape[1])
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            sys.exit(f"pytorch_resnet.py: {args.weights}: missing {missing}, unexpected {unexpected}")
        torch.set_num_threads(args.threads if args.threads > 0 else os.cpu_count())
        _, _, xte, yte, _ = load_split(args.data, siam["train_size"], siam["test_size"])
        if not torch.equal(torch.from_numpy(yte), lab):
            sys.exit("pytorch_resnet.py: the test labels of --data differ from embedding.csv's")
        mine_emb = embed(net, torch.from_numpy(xte).view(-1, 1, 28, 28))
        diff = float((mine_emb - emb).abs().max())
        again = retrieval_metrics(mine_emb, lab)
        print(f"embeddings of the test images by this network with the run's weights: max |difference| {diff:.3g}")
        print("metrics of those embeddings: " + ", ".join(f"{k} {again[k]:.10g}" for k in
                                                          ("precision_at_1", "r_precision", "map_at_r")))
        if diff > args.embedding_tolerance:
            print(f"FAIL: the embeddings differ by {diff:.3g} > {args.embedding_tolerance:g}")
            failed = True
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


def cmd_selftest(_args):
    """The metrics on cases computed by hand (tests/test_search.cpp's, and ties)."""
    def run(points, labels):
        return retrieval_metrics(torch.tensor(points, dtype=torch.float32).view(len(points), -1),
                                 torch.tensor(labels))
    cases = [
        # 1-D points 0, 1, 2, 10 labelled a, b, a, a: query 0: 1(b) 2(a) 10(a), R 2: P@1 0, RP
        # 1/2, AP 1/4; query 1 lone; query 2: 1(b) 0(a) 10(a): 0, 1/2, 1/4; query 3: 2(a) 1(b)
        # 0(a): 1, 1/2, 1/2.
        ([0, 1, 2, 10], [7, 8, 7, 7], 1 / 3, 0.5, (0.25 + 0.25 + 0.5) / 3),
        # Ties go to the smaller index: points 0, 1, -1 with labels a, b, a: query 0 sees 1(b)
        # then -1(a) at the same distance: P@1 0, R 1: RP 0, AP 0; query 2 (at -1): 0(a) first:
        # P@1 1, RP 1, AP 1.
        ([0, 1, -1], [5, 6, 5], 0.5, 0.5, 0.5),
        # The same with the labels of 1 and -1 swapped: query 0 sees 1(a) first.
        ([0, 1, -1], [5, 5, 6], 1.0, 1.0, 1.0),
        # Duplicates: rows 0 and 1 at one point, labels b, a, a at 0, 0, 3: query 1 (a): 0(b),
        # then 2(a): P@1 0, RP 0 (R 1), AP 0; query 2 (a): 0(b) and 1(a) tied, 0 first: 0, 0, 0.
        ([0, 0, 3], [1, 2, 2], 0.0, 0.0, 0.0),
        # Every query lone: all metrics 0.
        ([0, 1], [1, 2], 0.0, 0.0, 0.0),
    ]
    failed = 0
    for points, labels, p1, rp, mapr in cases:
        got = run(points, labels)
        want = {"precision_at_1": p1, "r_precision": rp, "map_at_r": mapr}
        ok = all(abs(got[k] - v) < 1e-12 for k, v in want.items())
        failed += not ok
        print(("ok  " if ok else "FAIL") + f" points {points} labels {labels}: got "
              + ", ".join(f"{k} {got[k]:.6g}" for k in want) + " want " + ", ".join(f"{v:.6g}" for v in want.values()))
    # batch_all (the training loss) against a loop over every triplet, in double: a 3 x 4
    # batch, margin 0.3 (some triplets inactive), and the sampler's shape.
    from pytorch_losses import batch_all, pk_size
    gen = torch.Generator().manual_seed(3)
    e = torch.nn.functional.normalize(torch.randn(12, 5, generator=gen), dim=1)
    lab = torch.arange(3).repeat_interleave(4)
    got = float(batch_all(e, lab, 0.3))
    e64 = e.double()
    total, active = 0.0, 0
    for a in range(12):
        for p in range(12):
            for q in range(12):
                if p == a or lab[p] != lab[a] or lab[q] == lab[a]:
                    continue
                x = float(torch.sqrt(((e64[a] - e64[p]) ** 2).sum() + 1e-6)
                          - torch.sqrt(((e64[a] - e64[q]) ** 2).sum() + 1e-6)) + 0.3
                if x > 0:
                    total += x
                    active += 1
    want = total / max(active, 1)
    ok = 0 < active < 12 * 3 * 8 and abs(got - want) < 1e-5 and pk_size(10, 180) == (10, 36)
    failed += not ok
    print(("ok  " if ok else "FAIL") + f" batch_all {got:.7g}, every triplet in double {want:.7g} "
          f"({active} of {12 * 3 * 8} active); P x K for 180 pairs of 10 classes {pk_size(10, 180)}")
    sched = lr_schedule("cosine", 1.0, 2, 10)
    want_cos = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 8))]
    ok = all(abs(sched(s) - w) < 1e-12 for s, w in enumerate(want_cos)) and sched(10) == 0.0
    ok = ok and lr_schedule("step", 1.0, 0, 10)(5) == 0.1 and lr_schedule("step", 1.0, 0, 10)(4) == 1.0
    ok = ok and abs(lr_schedule("exp:gamma=0.5,warmup=1", 2.0, 0, 10)(3) - 0.5) < 1e-12
    failed += not ok
    print(("ok  " if ok else "FAIL") + " learning-rate schedules")
    return 1 if failed else 0

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--pairs", type=int, default=180)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--embedding", type=int, default=64)
    # The example's defaults (examples/mnist_siamese/options.hpp).
    r = sub.add_parser("train", help="the example's --arch resnet --loss batch-all run")
    r.add_argument("--data", required=True, help="directory of MNIST-style IDX files")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--iterations", type=int, default=3000)
    r.add_argument("--batch-pairs", type=int, default=180, help="2 x pairs images per step (P x K)")
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--beta1", type=float, default=0.9)
    r.add_argument("--beta2", type=float, default=0.99)
    r.add_argument("--schedule", default="constant", help="constant, cosine, step or a full spec")
    r.add_argument("--warmup", type=int, default=0)
    r.add_argument("--margin", type=float, default=0.3)
    r.add_argument("--train-size", type=int, default=5000)
    r.add_argument("--test-size", type=int, default=5000)
    r.add_argument("--threads", type=int, default=0, help="0: every core")
    r.add_argument("--width", type=int, default=32)
    r.add_argument("--embedding", type=int, default=64)
    c = sub.add_parser("check", help="the metrics (and with --weights the network) against an example run")
    c.add_argument("--run", required=True, help="the example's --out directory (embedding.csv, metrics.json)")
    c.add_argument("--weights", help="the run's model as safetensors (mnist_siamese export --safetensors)")
    c.add_argument("--data", help="with --weights: the run's --data")
    c.add_argument("--tolerance", type=float, default=1e-6)
    c.add_argument("--embedding-tolerance", type=float, default=1e-4)
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--width", type=int, default=32)
    sub.add_parser("selftest", help="the metrics and schedules on hand-computed cases")
    args = ap.parse_args()
    if args.cmd == "time":
        cmd_time(args)
        return 0
    if args.cmd == "train":
        if args.iterations < 0 or args.batch_pairs < 2 or args.threads < 0 or args.warmup < 0:
            ap.error("--iterations must be >= 0, --batch-pairs >= 2, --threads >= 0, --warmup >= 0")
        if args.test_size < 10 or args.train_size <= 0 or not (args.lr > 0) or not (args.margin >= 0):
            ap.error("--test-size must be >= 10, --train-size > 0, --lr > 0, --margin >= 0")
        return cmd_train(args)
    if args.cmd == "check":
        if args.weights and not args.data:
            ap.error("--weights needs --data")
        return cmd_check(args)
    return cmd_selftest(args)


if __name__ == "__main__":
    sys.exit(main())

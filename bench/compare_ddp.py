#!/usr/bin/env python3
"""PyTorch DistributedDataParallel (Gloo) on the step that dist_train times: the same
network (784-1024-ReLU-1024-ReLU-2, He init), global batch (180 pairs, each rank a
contiguous half), data (the clusters dist_train --dump-data writes), contrastive loss (sum,
margin 1.0) and Adam; 2 processes x 1 thread by default. Prints one JSON line (rank 0).

    python3 bench/compare_ddp.py DATA_FILE [--ranks 2] [--steps 60] [--warmup 10]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

LAYERS = (784, 1024, 1024, 2)


def make_net():
    mods = []
    for i, (a, b) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        lin = nn.Linear(a, b)
        nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i + 2 < len(LAYERS):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def contrastive(f1, f2, y, margin=1.0):
    d = torch.sqrt(torch.sum((f1 - f2) ** 2, dim=1) + 1e-6)
    return 0.5 * torch.sum(y * d**2 + (1 - y) * torch.clamp(margin - d, min=0) ** 2)


def worker(rank, args, out):
    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(args.port)
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    raw = np.fromfile(args.data, dtype=np.uint8)
    n = raw.size // (LAYERS[0] * 4 + 1)
    x = torch.from_numpy(raw[: n * LAYERS[0] * 4].view(np.float32).reshape(n, LAYERS[0]).copy())
    labels = raw[n * LAYERS[0] * 4 :]
    by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(make_net())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    rng = np.random.default_rng(7)  # the same global pair stream on every rank
    lo, hi = args.pairs * rank // args.ranks, args.pairs * (rank + 1) // args.ranks
    times = []
    for step in range(args.warmup + args.steps):
        first, second, sim = [], [], []
        for _ in range(args.pairs):
            if rng.random() < 0.5:
                idx = by_class[rng.integers(len(by_class))]
                a, b = rng.choice(idx, 2, replace=False)
                sim.append(1.0)
            else:
                ca, cb = rng.choice(len(by_class), 2, replace=False)
                a, b = rng.choice(by_class[ca]), rng.choice(by_class[cb])
                sim.append(0.0)
            first.append(a)
            second.append(b)
        t0 = time.perf_counter()
        batch = x[np.r_[first[lo:hi], second[lo:hi]]]
        y = torch.tensor(sim[lo:hi])
        f = model(batch)
        m = hi - lo
        loss = contrastive(f[:m], f[m:], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces bucketed gradients during backward
        opt.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        out.put(statistics.median(times))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=180)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--port", type=int, default=29533)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, out)) for r in range(args.ranks)]
    for p in procs:
        p.start()
    step = out.get()
    for p in procs:
        p.join()
    print(json.dumps({"impl": "pytorch-ddp-gloo", "torch": torch.__version__, "ranks": args.ranks,
                      "threads": args.threads, "steps": args.steps,
                      "step_ms": round(1e3 * step, 3)}))


if __name__ == "__main__":
    main()

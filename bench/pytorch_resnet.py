#!/usr/bin/env python3
"""The ResNet Siamese network of siam's nn::resnet (`mnist_siamese --arch resnet`), in
PyTorch: a side-by-side step timing (bench/compare_resnet.sh runs it next to bench_resnet).

Network (nn::resnet_specs(Shape{1, 28, 28}, width, embedding)): Conv2d(1->w, 3, pad 1, no
bias) - BatchNorm2d - ReLU; three stages of two basic blocks at w, 2w, 4w channels (conv3x3
BN ReLU conv3x3 BN, plus the shortcut: identity, or conv1x1 stride 2 + BN at the start of
stages 2 and 3; then ReLU); global average pooling; Linear(4w -> embedding); L2
normalisation (x / max(|x|, 1e-12)). He initialisation (normal, std sqrt(2 / fan_in)), zero
biases, BN weight 1 and bias 0, momentum 0.1, eps 1e-5. One step: a stacked batch of
2 x PAIRS images in training mode, contrastive loss (sum, margin 0.3,
d = sqrt(|f1 - f2|^2 + 1e-6), as siam's), Adam(1e-4, (0.9, 0.99), 1e-8).

    python3 bench/pytorch_resnet.py time [--threads 2 --steps 20 --pairs 180]   # JSON

Run PyTorch at its best on the CPU: bench/compare_resnet.sh sets LD_PRELOAD to tcmalloc and
puts the OpenMP OpenBLAS first; PyTorch's CPU convolutions run on its own oneDNN (mkldnn).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

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
    args = ap.parse_args()
    cmd_time(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

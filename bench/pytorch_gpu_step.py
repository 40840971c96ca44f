#!/usr/bin/env python3
"""The siam example's training step in PyTorch on a GPU, in each of PyTorch's fast modes.

The network, batch, loss and Adam settings of bench/compare_pytorch.py (784-1024-1024-2,
360 rows, contrastive loss, Adam(1e-4, (0.9, 0.99))), timed with CUDA events over many
queued steps, the loss never read back inside the timed loop (as siam's BM_GpuTrainStep):

    eager     plain PyTorch (Adam's fused CUDA kernel)
    graph     the whole step (forward, loss, backward, Adam) captured with torch.cuda.graph
              and replayed (Adam with capturable=True)
    compile   torch.compile of the network and the loss, Adam's fused kernel

each under every torch.set_float32_matmul_precision (highest = FP32, high = TF32,
medium = BF16), and prints one JSON line per configuration.

    python3 bench/pytorch_gpu_step.py                    # on the GPU
    python3 bench/pytorch_gpu_step.py --net lenet        # the LeNet Siamese network's step
    python3 bench/pytorch_gpu_step.py --device cpu --steps 5 --modes eager   # a smoke test
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_pytorch import PAIRS, contrastive_loss, make_batch, make_net  # noqa: E402
import pytorch_cnn  # noqa: E402  (the LeNet Siamese network, --net lenet)


def timed(run, steps, rounds, device):
    """Median over `rounds` of the mean time of `steps` queued calls of run(), in ms."""
    out = []
    for _ in range(rounds):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                run()
            stop.record()
            stop.synchronize()
            out.append(start.elapsed_time(stop) / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                run()
            out.append(1e3 * (time.perf_counter() - t0) / steps)
    return statistics.median(out)


NET = "mlp"  # or "lenet" (--net): siam's nn::lenet, 28 x 28 images


def setup(device, seed, fused):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = (pytorch_cnn.make_net() if NET == "lenet" else make_net()).to(device)
    x, y = make_batch(gen)
    if NET == "lenet":
        x = x.reshape(2 * PAIRS, 1, 28, 28)
    x, y = x.to(device), y.to(device)
    kw = {"fused": True} if fused else {}
    return net, x, y, kw


def eager_step(net, opt, x, y, loss_fn):
    opt.zero_grad(set_to_none=True)
    f = net(x)
    loss = loss_fn(f[:PAIRS], f[PAIRS:], y)
    loss.backward()
    opt.step()
    return loss


def make_runner(mode, device, seed):
    on_gpu = device == "cuda"
    net, x, y, kw = setup(device, seed, fused=on_gpu)
    if mode == "eager":
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8, **kw)
        return lambda: eager_step(net, opt, x, y, contrastive_loss), 0
    if mode == "compile":
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8, **kw)
        cnet, closs = torch.compile(net), torch.compile(contrastive_loss)
        return lambda: eager_step(cnet, opt, x, y, closs), 0
    if mode == "graph":
        if not on_gpu:
            raise RuntimeError("graph mode needs a CUDA device")
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-8,
                               capturable=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as the PyTorch docs show
            for _ in range(3):
                eager_step(net, opt, x, y, contrastive_loss)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            f = net(x)
            loss = contrastive_loss(f[:PAIRS], f[PAIRS:], y)
            loss.backward()
            opt.step()
        return graph.replay, 1
    raise ValueError(f"unknown mode {mode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="eager,graph,compile")
    ap.add_argument("--precisions", default="highest,high,medium")
    ap.add_argument("--net", default="mlp", choices=["mlp", "lenet"])
    args = ap.parse_args()
    global NET
    NET = args.net
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pytorch_gpu_step: no CUDA device", file=sys.stderr)
        return 77
    for precision in args.precisions.split(","):
        torch.set_float32_matmul_precision(precision)
        for mode in args.modes.split(","):
            try:
                run, _ = make_runner(mode, args.device, args.seed)
                for _ in range(args.warmup):
                    run()
                ms = timed(run, args.steps, args.rounds, args.device)
                row = {"framework": "pytorch", "net": args.net, "mode": mode,
                       "precision": precision, "ms_per_step": ms}
            except Exception as e:  # one mode failing must not hide the others
                row = {"framework": "pytorch", "net": args.net, "mode": mode,
                       "precision": precision, "error": f"{type(e).__name__}: {e}"[:300]}
            row.update({"torch": torch.__version__, "device": args.device,
                        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None})
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Step time of data-parallel training against the number of GPUs (docs/scaling.md).

    T(N) = C + A(N),   A(N) = 2 (N - 1) / N * S / BW + 2 (N - 1) * alpha

C: compute per step and GPU (measured; its batch-proportional part scales with the pairs
per GPU), S: bytes of gradients summed per step, BW: link
bandwidth per GPU, alpha: latency per ring step. A ring all-reduce sends and receives
2 (N - 1) / N * S bytes per GPU in 2 (N - 1) steps. With perfect overlap of backward and
all-reduce the step is max(C, A) + (forward share of C); the table gives both bounds.

    python3 bench/scaling_model.py [--compute-ms 0.248] [--bytes 7421964] [--alpha-us 5]
"""
import argparse

ap = argparse.ArgumentParser()
ap.add_argument("--compute-ms", type=float, default=0.248)  # H200 step, 180 pairs (docs/benchmarks.md)
ap.add_argument("--bytes", type=float, default=7421964)  # 1,855,490 FP32 gradients + the loss
ap.add_argument("--alpha-us", type=float, default=5.0)
# Of C, the part that does not grow with the batch (launches, small kernels, Adam): the
# H200 step spends 124 us of its 248 us in the five large GEMMs (docs/benchmarks.md).
ap.add_argument("--fixed-ms", type=float, default=0.124)
ap.add_argument("--pairs", type=int, default=180)
ap.add_argument("--links", default="100,400")  # Gb/s
args = ap.parse_args()

C = args.compute_ms
links = [float(x) for x in args.links.split(",")]


def allreduce_ms(n, gbit):
    bw = gbit * 1e9 / 8  # bytes per second
    return 1e3 * (2 * (n - 1) / n * args.bytes / bw + 2 * (n - 1) * args.alpha_us * 1e-6)


head = "| GPUs |" + "".join(f" all-reduce {g:g} Gb/s | step (no overlap) | efficiency | pairs/GPU for C = A |" for g in links)
print(head)
print("| --- |" + " --- | --- | --- | --- |" * len(links))
for n in (1, 2, 4, 8, 16, 32, 64):
    row = f"| {n} |"
    for g in links:
        a = allreduce_ms(n, g)
        t = C + a
        # per-GPU batch whose compute C(b) = fixed + (C - fixed) b / pairs equals A
        need = args.pairs * max(a - args.fixed_ms, 0) / (C - args.fixed_ms)
        row += f" {a:.3f} ms | {t:.3f} ms | {C / t:.0%} | {need:.0f} |"
    print(row)

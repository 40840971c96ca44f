#!/usr/bin/env python3
"""Draws bench/sweep.py's JSON as an SVG: siam / PyTorch step-time ratio against batch size
(at hidden width 1024) and against hidden width (at 180 pairs), one line per thread count.
Plain SVG written by hand: no plotting package needed.

    python3 bench/plot_sweep.py sweep.json docs/images/sweep.svg ["a note: machine, load"]
"""
import json
import math
import sys

W, H = 860, 360
PANEL_W, PANEL_H = 340, 250
COLORS = {1: "#1f77b4", 2: "#d62728", 4: "#2ca02c"}


def panel(x0, y0, title, xlabel, series, xs, ymax):
    """series: {threads: [(x, ratio)]}, log2 x axis over xs, linear y from 0 to ymax."""
    out = []
    lx0, lx1 = math.log2(min(xs)), math.log2(max(xs))

    def px(x):
        return x0 + (math.log2(x) - lx0) / (lx1 - lx0) * PANEL_W

    def py(y):
        return y0 + PANEL_H - y / ymax * PANEL_H

    out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 - 10}" text-anchor="middle" font-size="14">{title}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + PANEL_H + 38}" text-anchor="middle" font-size="12">{xlabel}</text>')
    step = 0.25 if ymax <= 2 else 0.5
    y = 0.0
    while y <= ymax + 1e-9:
        out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{y:.2f}</text>')
        y += step
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{y0 + PANEL_H + 16}" text-anchor="middle" font-size="11">{x}</text>')
    for ref, dash in ((1.0, "6,4"), (0.75, "2,3")):
        if ref <= ymax:
            out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{py(ref):.1f}" y2="{py(ref):.1f}" '
                       f'stroke="#000" stroke-dasharray="{dash}"/>')
    for t, pts in sorted(series.items()):
        pts = sorted(pts)
        c = COLORS.get(t, "#555")
        path = " ".join(f"{px(x):.1f},{py(r):.1f}" for x, r in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, r in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(r):.1f}" r="3.5" fill="{c}"/>')
    return out


def main():
    src, dst = sys.argv[1], sys.argv[2]
    note = sys.argv[3] if len(sys.argv) > 3 else ""
    j = json.load(open(src))
    pts = j["points"]
    threads = sorted({p["threads"] for p in pts})
    ymax = max(1.25, math.ceil(max(p["ratio"] for p in pts) * 4) / 4)
    by_pairs = {t: [(p["pairs"], p["ratio"]) for p in pts if p["hidden"] == 1024 and p["threads"] == t]
                for t in threads}
    by_hidden = {t: [(p["hidden"], p["ratio"]) for p in pts if p["pairs"] == 180 and p["threads"] == t]
                 for t in threads}
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="15">siam step time / PyTorch '
           f'({j["pytorch_config"]}) step time; below 1: siam faster. GEMM: {j["siam_gemm_provider"]}</text>']
    if note:
        svg.append(f'<text x="{W / 2}" y="34" text-anchor="middle" font-size="11">{note}</text>')
    svg += panel(70, 55, "over batch size (hidden 1024)", "pairs per step (log scale)", by_pairs,
                 sorted({p for t in threads for p, _ in by_pairs[t]}), ymax)
    svg += panel(490, 55, "over hidden width (180 pairs)", "hidden width (log scale)", by_hidden,
                 sorted({h for t in threads for h, _ in by_hidden[t]}), ymax)
    for i, t in enumerate(threads):
        svg.append(f'<line x1="{300 + i * 120}" x2="{325 + i * 120}" y1="{H - 10}" y2="{H - 10}" '
                   f'stroke="{COLORS.get(t, "#555")}" stroke-width="2"/>')
        svg.append(f'<text x="{330 + i * 120}" y="{H - 6}" font-size="12">{t} thread{"s" if t > 1 else ""}</text>')
    svg.append(f'<text x="{300 + len(threads) * 120}" y="{H - 6}" font-size="12">dashed: 1.0 and 0.75</text>')
    svg.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(svg) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

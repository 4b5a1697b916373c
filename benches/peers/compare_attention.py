#!/usr/bin/env python3
"""`shadergrad bench attention` beside PyTorch's scaled_dot_product_attention
on the same shapes, forward and forward+backward, measured in the same run
(one after the other), with the ratio shadergrad-fused / PyTorch.

    cargo build --release --bin shadergrad
    python3 benches/peers/compare_attention.py               # cpu backend vs PyTorch CPU
    python3 benches/peers/compare_attention.py --device gpu  # vs PyTorch CUDA where present

Threads: $SHADERGRAD_THREADS, else all cores, for both. Budget per entry:
$SHADERGRAD_BENCH_MS (default 1000).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

# PyTorch's OpenMP threads spin and collapse when another process holds a
# core; passive waiting keeps the comparison fair on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
THREADS = int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count()))
os.environ["RAYON_NUM_THREADS"] = str(THREADS)
BUDGET_MS = int(os.environ.get("SHADERGRAD_BENCH_MS", "1000"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = re.compile(r"attention (fused|unfused) b(\d+) h(\d+) l(\d+) d(\d+) (forward\+backward|forward)$")


def shadergrad(binary, device):
    out = subprocess.run(
        [binary, "bench", "attention", "--json", "--device", device, "--ms", str(BUDGET_MS)],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        r = json.loads(line)
        m = NAME.match(r["name"])
        if m:
            kind, b, h, l, d, what = m.groups()
            rows[(kind, (int(b), int(h), int(l), int(d)), what)] = r
    return rows


def torch_rows(shapes, cuda):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    dev = "cuda" if cuda else "cpu"

    def median(f):
        f()
        sync()
        times = []
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < BUDGET_MS / 1000 and len(times) < 1000):
            t = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rows = {}
    for shape in shapes:
        b, h, l, d = shape
        q, k, v, w = (torch.rand(b, h, l, d, device=dev) - 0.5 for _ in range(4))
        with torch.no_grad():
            rows[("torch", shape, "forward")] = median(lambda: F.scaled_dot_product_attention(q, k, v).sum().item())
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

        def step():
            o = F.scaled_dot_product_attention(qg, kg, vg)
            gq, gk, gv = torch.autograd.grad((o * w).sum(), (qg, kg, vg))
            gq.sum().item()

        rows[("torch", shape, "forward+backward")] = median(step)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="shadergrad device: cpu, gpu, gpu:N")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "shadergrad"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} is missing; build it with: cargo build --release --bin shadergrad")
    ours = shadergrad(args.binary, args.device)
    shapes = sorted({s for (_, s, _) in ours})
    import torch

    cuda = args.device != "cpu" and torch.cuda.is_available()
    theirs = torch_rows(shapes, cuda)
    peer = "PyTorch CUDA" if cuda else f"PyTorch {torch.__version__} CPU"
    print(f"threads {THREADS}; shadergrad device {args.device}; peer {peer} (scaled_dot_product_attention)")
    print(f"{'shape (b h l d)':<20} {'pass':<17} {'fused ms':>9} {'unfused ms':>11} {'torch ms':>9} "
          f"{'fused MiB':>10} {'unfused MiB':>12} {'torch/fused':>12}")
    ratios = []
    for shape in shapes:
        for what in ("forward", "forward+backward"):
            f = ours.get(("fused", shape, what))
            u = ours.get(("unfused", shape, what))
            t = theirs[("torch", shape, what)]
            if not f or not u:
                continue
            ratio = t / f["seconds"]
            ratios.append(ratio)
            print(f"{' '.join(map(str, shape)):<20} {what:<17} {f['seconds'] * 1e3:>9.2f} {u['seconds'] * 1e3:>11.2f} "
                  f"{t * 1e3:>9.2f} {f['peak_bytes'] / 2**20:>10.1f} {u['peak_bytes'] / 2**20:>12.1f} {ratio:>12.2f}x")
    if ratios:
        geo = 1.0
        for r in ratios:
            geo *= r
        geo **= 1 / len(ratios)
        print(f"geometric mean speed vs PyTorch (torch time / fused time): {geo:.2f}x; above 1 means shadergrad is faster")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Same kernels as `cargo bench --bench kernels` in PyTorch CPU, same thread
count, measured in the same run; prints both and the ratio shadergrad/PyTorch.

    python3 benches/peers/compare_kernels.py            # both, with ratios
    python3 benches/peers/compare_kernels.py --torch-only

Threads: $SHADERGRAD_THREADS, else all cores (rayon's default) for both.
"""
import json
import os
import subprocess
import sys
import time

# PyTorch's OpenMP threads spin and collapse when another process holds a
# core; passive waiting keeps the comparison fair on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
THREADS = int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count()))
os.environ["RAYON_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402

torch.set_num_threads(THREADS)
BUDGET = float(os.environ.get("SHADERGRAD_BENCH_MS", "1000")) / 1000.0

CONVS = [
    ("conv1 3->32 32x32", (32, 3, 32, 32), (32, 3, 3, 3)),
    ("conv2 32->64 15x15", (32, 32, 15, 15), (64, 32, 3, 3)),
    ("conv3 64->64 6x6", (32, 64, 6, 6), (64, 64, 3, 3)),
]


def median_time(f):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < BUDGET and len(times) < 1000):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def torch_kernels():
    out = {}
    with torch.no_grad():
        for n in (256, 512, 1024):
            a, b = torch.randn(n, n), torch.randn(n, n)
            out[f"matmul {n}x{n}x{n}"] = 2 * n**3 / median_time(lambda: torch.matmul(a, b)) / 1e9
        for name, xs, ws in CONVS:
            x, w = torch.randn(*xs), torch.randn(*ws)
            y = torch.nn.functional.conv2d(x, w)
            dy = torch.randn_like(y)
            flops = 2 * y.numel() * xs[1] * ws[2] * ws[3]
            out[f"{name} forward"] = flops / median_time(lambda: torch.nn.functional.conv2d(x, w)) / 1e9
            out[f"{name} backward-data"] = flops / median_time(lambda: torch.nn.grad.conv2d_input(xs, w, dy)) / 1e9
            out[f"{name} backward-filter"] = flops / median_time(lambda: torch.nn.grad.conv2d_weight(x, ws, dy)) / 1e9
    return out


def ours():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run(
        ["cargo", "bench", "-q", "--bench", "kernels", "--", "--json"],
        cwd=root, capture_output=True, text=True, check=True,
    )
    return {r["name"]: r["gflops"] for r in map(json.loads, res.stdout.splitlines()) if r}


def main():
    print(f"threads: {THREADS}, torch {torch.__version__}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    theirs = torch_kernels()
    if "--torch-only" in sys.argv:
        for k, v in theirs.items():
            print(f"{k:<40} {v:10.1f} GFLOP/s")
        return
    mine = ours()
    print(f"{'kernel':<40} {'shadergrad':>11} {'pytorch':>9} {'ratio':>7}")
    for k, v in theirs.items():
        m = mine.get(k, float("nan"))
        print(f"{k:<40} {m:11.1f} {v:9.1f} {m / v:7.2f}x")


if __name__ == "__main__":
    main()

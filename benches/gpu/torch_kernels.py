"""PyTorch CUDA peer for `shadergrad bench --device gpu`: the same square
matmuls (f32, TF32 off) and the reference CNN's convolutions (cuDNN, TF32
off), timed with CUDA events. One JSON object per line, like
`shadergrad bench --json`.

    python3 benches/gpu/torch_kernels.py --sizes 1024,2048,4096
"""
import argparse
import json

import torch

CNN_CONVS = [
    ("conv1 3->32 32x32", (32, 3, 32, 32), (32, 3, 3, 3)),
    ("conv2 32->64 15x15", (32, 32, 15, 15), (64, 32, 3, 3)),
    ("conv3 64->64 6x6", (32, 64, 6, 6), (64, 64, 3, 3)),
]


def cuda_time(fn, ms):
    """Median seconds per call over batches of calls filling about `ms`."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    one = max(start.elapsed_time(end), 1e-3)
    reps = max(1, min(200, int(50 / one)))
    times = []
    budget = ms
    while len(times) < 3 or (budget > 0 and len(times) < 1000):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        t = start.elapsed_time(end)
        budget -= t
        times.append(t / reps / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1024,2048,4096")
    p.add_argument("--ms", type=float, default=1000)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    for n in [int(s) for s in a.sizes.split(",") if s]:
        x = torch.rand(n, n, device=dev) - 0.5
        y = torch.rand(n, n, device=dev) - 0.5
        sec = cuda_time(lambda: torch.matmul(x, y), a.ms)
        flops = 2.0 * n**3
        print(json.dumps({"name": f"torch matmul {n}x{n}x{n}", "seconds": sec, "gflops": flops / sec / 1e9}))
    for name, xs, ws in CNN_CONVS:
        x = (torch.rand(*xs, device=dev) - 0.5).requires_grad_()
        w = (torch.rand(*ws, device=dev) - 0.5).requires_grad_()
        ys = (xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1)
        dy = torch.rand(*ys, device=dev) - 0.5
        flops = 2.0 * ys[0] * ys[1] * ys[2] * ys[3] * xs[1] * ws[2] * ws[3]
        cases = [
            ("forward", lambda: torch.nn.functional.conv2d(x, w)),
            ("backward-data", lambda: torch.nn.grad.conv2d_input(xs, w, dy)),
            ("backward-filter", lambda: torch.nn.grad.conv2d_weight(x, ws, dy)),
        ]
        for pass_, fn in cases:
            with torch.no_grad():
                sec = cuda_time(fn, a.ms)
            print(json.dumps({"name": f"torch {name} {pass_}", "seconds": sec, "gflops": flops / sec / 1e9}))


if __name__ == "__main__":
    main()

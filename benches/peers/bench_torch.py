#!/usr/bin/env python3
"""PyTorch peer of `shadergrad bench`: runs the entries of one of our
reports in PyTorch (CPU, or CUDA with TF32 off) and writes a report of the
same schema, so `shadergrad bench --compare` and this script's table can
pair them by name.

    shadergrad bench --device cpu --json ours.json
    python3 benches/peers/bench_torch.py --like ours.json --out torch.json
    shadergrad bench --device cpu --compare torch.json   # ours again, live

The table printed here pairs the peer with the `--like` report (ratio =
their time / ours; above 1: shadergrad is faster). Entries without a
PyTorch counterpart (our kernel versions next to the engine's choice:
naive, tiled, blocked, large, small) are skipped.
Threads: $SHADERGRAD_THREADS, else the report's host threads.
"""
import argparse
import json
import math
import os
import platform
import time

# PyTorch's OpenMP threads spin and collapse when another process holds a
# core; passive waiting keeps the comparison fair on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

SCHEMA = 1


def timer(dev, budget):
    """Median, 10th and 90th percentile seconds per call and the sample count.

    CPU: wall clock per call. CUDA: events around batches of calls sized to
    about 20 ms, so launch gaps between calls count as they would in a loop."""
    def run(fn):
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            reps = max(1, min(200, int(20.0 / max(start.elapsed_time(end), 1e-3))))
        else:
            reps = 1
        times, spent = [], 0.0
        while len(times) < 5 or (spent < budget and len(times) < 1000):
            if dev.type == "cuda":
                start.record()
                for _ in range(reps):
                    fn()
                end.record()
                torch.cuda.synchronize()
                t = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
            spent += t
            times.append(t / reps)
        times.sort()
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
        return pick(0.5), pick(0.1), pick(0.9), len(times)
    return run


def rand(dev, *shape, grad=False):
    return (torch.rand(*shape, device=dev) - 0.5).requires_grad_(grad)


def matmul(dev, e):
    b, m, k, n = e["shape"]
    x, y = rand(dev, b, m, k), rand(dev, b, k, n)
    return (lambda: torch.matmul(x, y)), 2.0 * b * m * k * n, None


def conv(dev, e):
    n, c, h, w, o, _, kh, kw = e["shape"]
    stride = 2 if " s2 " in e["name"] else 1
    # seed-cnn layers are unpadded; the ResNet-18 and DCGAN ones pad by 1
    padding = 1 if (" resnet18 " in e["name"] or " dcgan " in e["name"]) else 0
    x, wt = rand(dev, n, c, h, w), rand(dev, o, c, kh, kw)
    y = F.conv2d(x, wt, stride=stride, padding=padding)
    dy = torch.rand_like(y)
    flops = 2.0 * y.numel() * c * kh * kw
    if e["name"].endswith("backward-data"):
        fn = lambda: torch.nn.grad.conv2d_input(x.shape, wt, dy, stride=stride, padding=padding)  # noqa: E731
    elif e["name"].endswith("backward-filter"):
        fn = lambda: torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride=stride, padding=padding)  # noqa: E731
    else:
        fn = lambda: F.conv2d(x, wt, stride=stride, padding=padding)  # noqa: E731
    return fn, flops, None


def elementwise(dev, e):
    (n,) = e["shape"]
    a, b, c = rand(dev, n), rand(dev, n), rand(dev, n)
    if " add " in e["name"]:
        return (lambda: a + b), None, 12.0 * n
    return (lambda: torch.relu(a * b + c)), None, 16.0 * n


def reduce(dev, e):
    if " rows " in e["name"]:
        rows, cols = e["shape"]
        x = rand(dev, rows, cols)
        return (lambda: x.sum(1, keepdim=True)), None, 4.0 * (rows * cols + rows)
    (n,) = e["shape"]
    x = rand(dev, n)
    return (lambda: x.sum()), None, 4.0 * n


def attention(dev, e):
    b, h, seq, d = e["shape"]
    backward = e["name"].endswith("forward+backward")
    q, k, v = (rand(dev, b, h, seq, d, grad=backward) for _ in range(3))
    w = rand(dev, b, h, seq, d)
    if " fused " in e["name"]:
        f = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    else:
        f = lambda: torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v  # noqa: E731
    if backward:
        def fn():
            torch.autograd.grad((f() * w).sum(), (q, k, v))
    else:
        def fn():
            with torch.no_grad():
                f()
    return fn, (3.0 if backward else 1.0) * 4.0 * b * h * seq * seq * d, None


def seed_cnn(dev, batch):
    """The seed CNN with Adam (eps 1e-7 as Keras); one step reads the loss
    and the accuracy count back, as `shadergrad train` does."""
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    x = torch.rand(batch, 3, 32, 32, device=dev)
    y = (torch.arange(batch, device=dev) % 10).long()

    def fn():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        (logits.argmax(1) == y).sum().item()
    return fn


def dcgan(dev, batch, w):
    """DCGAN as benches/peers/train_dcgan_torch.py: the discriminator's
    update, then the generator's."""
    latent = 100

    def up(i, o):
        return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]
    g = nn.Sequential(
        nn.ConvTranspose2d(latent, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
        *up(4 * w, 2 * w), *up(2 * w, w), nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False), nn.Tanh()).to(dev)
    d = nn.Sequential(
        nn.Conv2d(3, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2, True),
        nn.Conv2d(4 * w, 1, 4, 1, 0, bias=False), nn.Flatten()).to(dev)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    x = torch.rand(batch, 3, 32, 32, device=dev) * 2 - 1
    ones, zeros = torch.ones(batch, 1, device=dev), torch.zeros(batch, 1, device=dev)

    def fn():
        fake = g(torch.randn(batch, latent, 1, 1, device=dev))
        opt_d.zero_grad(set_to_none=True)
        (bce(d(x), ones) + bce(d(fake.detach()), zeros)).backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        bce(d(fake), ones).backward()
        opt_g.step()
    return fn


def step(dev, e):
    batch = e["shape"][0]
    if e["name"].startswith("step seed-cnn"):
        return seed_cnn(dev, batch), None, None
    width = int(e["name"].split(" w")[1].split()[0])
    return dcgan(dev, batch, width), None, None


CASES = {"matmul": matmul, "conv": conv, "elementwise": elementwise, "reduce": reduce,
         "attention": attention, "step": step}


def device_info(dev, threads):
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return {"name": str(dev), "adapter": name, "driver": f"CUDA {torch.version.cuda}",
                "backend": "cuda", "device_type": "DiscreteGpu", "threads": threads}
    return {"name": "cpu", "adapter": platform.processor() or platform.machine(), "driver": "",
            "backend": "cpu", "device_type": "Cpu", "threads": threads}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", required=True, help="our report (`shadergrad bench --json`) whose entries to run")
    ap.add_argument("--out", help="write the peer's report here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--ms", type=float, default=1000, help="time budget per entry after its warm-up")
    args = ap.parse_args()
    with open(args.like) as f:
        ours = json.load(f)
    if ours.get("schema") != SCHEMA:
        raise SystemExit(f"{args.like} has schema {ours.get('schema')}, this script writes {SCHEMA}")
    threads = int(os.environ.get("SHADERGRAD_THREADS", ours["device"]["threads"] or os.cpu_count()))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    time_it = timer(dev, args.ms / 1e3)
    report = {"schema": SCHEMA, "tool": f"pytorch {torch.__version__}", "device": device_info(dev, threads),
              "timing": "cuda events" if dev.type == "cuda" else "wall clock",
              "peak": {"fma_gflops": 0.0, "copy_gbs": 0.0}, "entries": []}
    print(f"{report['tool']} on {report['device']['adapter']} ({dev}), {threads} threads; "
          f"against {ours['tool']} on {ours['device']['adapter']}")
    print(f"{'entry':<64} {'ours ms':>10} {'torch ms':>10} {'ratio':>7}")
    for e in ours["entries"]:
        if any(f" {v} " in e["name"] for v in ("naive", "tiled", "blocked", "large", "small")):
            continue
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        fn, flops, bytes_moved = CASES[e["group"]](dev, e)
        median, p10, p90, samples = time_it(fn)
        peak_bytes = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
        pool_bytes = torch.cuda.memory_reserved(dev) if dev.type == "cuda" and e["group"] == "step" else None
        report["entries"].append({
            "name": e["name"], "group": e["group"], "shape": e["shape"], "dtype": "f32",
            "median_s": median, "p10_s": p10, "p90_s": p90, "samples": samples,
            "gflops": flops / median / 1e9 if flops else None,
            "gbs": bytes_moved / median / 1e9 if bytes_moved else None,
            "fraction_of_peak": None, "dispatches": None, "host_us_per_dispatch": None,
            "submits": None, "waits": None, "peak_bytes": peak_bytes,
            "pool_bytes": pool_bytes})
        print(f"{e['name']:<64} {e['median_s'] * 1e3:10.3f} {median * 1e3:10.3f} "
              f"{median / e['median_s']:6.2f}x", flush=True)
        if args.out:  # after every entry, so a run cut short keeps what it measured
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report, f, indent=2)
            os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

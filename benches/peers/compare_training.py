#!/usr/bin/env python3
"""Training throughput of the seed CNN: shadergrad (cpu backend), Keras on
TensorFlow CPU and PyTorch CPU, same data subset, batch, epochs and threads,
measured one after another in one run; prints images/s and the ratios.

    cargo build --release
    python3 benches/peers/compare_training.py [--limit-train N] [--epochs 2] [--rounds 3] [--baseline OLD_BINARY]

By default every peer trains two full 50,000-image epochs and reports the
second's training images/s (evaluation excluded), as a user lives through a
run: a short epoch would charge one framework's per-epoch start-up to it.
This machine is noisy (20-40% between runs of one framework), so `--rounds`
repeats the three in rotating order and reports each ratio's median.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser()
ap.add_argument("--data")
ap.add_argument("--limit-train", type=int, default=0, help="train on this many images (0: all 50,000)")
ap.add_argument("--limit-test", type=int, default=1000)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--threads", type=int, default=int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count())))
ap.add_argument("--rounds", type=int, default=1,
                help="repeat all three this many times, rotating the order; prints median ratios")
ap.add_argument("--baseline",
                help="another shadergrad binary (say, a build of an earlier commit) run in the same "
                     "rotation as 'baseline', for before/after figures from one run")
args = ap.parse_args()

env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", RAYON_NUM_THREADS=str(args.threads),
           SHADERGRAD_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")
common = ["--epochs", str(args.epochs), "--limit-test", str(args.limit_test)]
if args.limit_train:
    common += ["--limit-train", str(args.limit_train)]
if args.data:
    common += ["--data", args.data]


def last_json(out):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(out)


def ours(exe=os.path.join(ROOT, "target", "release", "shadergrad")):
    out_dir = tempfile.mkdtemp(prefix="sg-compare-")
    res = subprocess.run([exe, "train", "cifar10", "--device", "cpu", "--json", "--out", out_dir] + common,
                         env=env, capture_output=True, text=True, check=True)
    r = last_json(res.stdout)
    with open(os.path.join(out_dir, "metrics.csv")) as f:
        rows = [l.split(",") for l in f.read().splitlines()[1:]]
    r["images_per_sec"] = float(rows[-1][5])  # last epoch, like the peers
    return r


def peer(script):
    res = subprocess.run([sys.executable, os.path.join(HERE, script), "--json"] + common,
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return last_json(res.stdout)


RUNNERS = {"shadergrad": ours, "keras": lambda: peer("train_keras.py"),
           "pytorch": lambda: peer("train_torch.py")}
if args.baseline:
    RUNNERS["baseline"] = lambda: ours(os.path.abspath(args.baseline))
PEERS = ("keras", "pytorch")


def speed(r):
    return r.get("images_per_sec")


print(f"seed-cnn, {args.limit_train or 50000} images x {args.epochs} epochs, batch 32, {args.threads} threads")
print(f"{'':<12} {'images/s':>9} {'test acc':>9}")
ratios = {name: [] for name in PEERS + ("faster peer",) + (("baseline",) if args.baseline else ())}
for k in range(args.rounds):
    if args.rounds > 1:
        print(f"round {k + 1}")
    # Rotate who goes first, so a slow start of the machine is not always one framework's.
    n = len(RUNNERS)
    names = list(RUNNERS)[k % n:] + list(RUNNERS)[:k % n]
    results = {name: RUNNERS[name]() for name in names}
    for name in RUNNERS:
        r = results[name]
        if "error" in r:
            print(f"{name:<12} unavailable: {r['error']}")
        else:
            print(f"{name:<12} {r['images_per_sec']:9.0f} {r['test_accuracy']:9.3f}")
    mine = speed(results["shadergrad"])
    peers = [speed(results[name]) for name in PEERS if speed(results[name])]
    for name in PEERS:
        if speed(results[name]):
            ratios[name].append(mine / speed(results[name]))
            print(f"shadergrad / {name}: {ratios[name][-1]:.2f}x")
    if peers:
        ratios["faster peer"].append(mine / max(peers))
        print(f"shadergrad / faster peer: {ratios['faster peer'][-1]:.2f}x")
    if args.baseline and speed(results["baseline"]):
        ratios["baseline"].append(mine / speed(results["baseline"]))
        print(f"shadergrad / baseline: {ratios['baseline'][-1]:.2f}x")
if args.rounds > 1:
    print(f"over {args.rounds} rounds (median, min-max):")
    for name, rs in ratios.items():
        if rs:
            rs = sorted(rs)
            print(f"shadergrad / {name}: {rs[len(rs) // 2]:.2f}x ({rs[0]:.2f}-{rs[-1]:.2f})")

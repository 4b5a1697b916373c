#!/usr/bin/env python3
"""Training throughput of the seed CNN: shadergrad (cpu backend), Keras on
TensorFlow CPU and PyTorch CPU, same data subset, batch, epochs and threads,
measured one after another in one run; prints images/s and the ratios.

    cargo build --release
    python3 benches/peers/compare_training.py [--limit-train 10000] [--epochs 2]

Each peer reports its last epoch's training images/s (the first warms up).
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
ap.add_argument("--limit-train", type=int, default=10000)
ap.add_argument("--limit-test", type=int, default=1000)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--threads", type=int, default=int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count())))
args = ap.parse_args()

env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", RAYON_NUM_THREADS=str(args.threads),
           SHADERGRAD_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")
common = ["--epochs", str(args.epochs), "--limit-train", str(args.limit_train), "--limit-test", str(args.limit_test)]
if args.data:
    common += ["--data", args.data]


def last_json(out):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(out)


def ours():
    out_dir = tempfile.mkdtemp(prefix="sg-compare-")
    exe = os.path.join(ROOT, "target", "release", "shadergrad")
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


results = {"shadergrad": ours(), "keras": peer("train_keras.py"), "pytorch": peer("train_torch.py")}
print(f"seed-cnn, {args.limit_train} images x {args.epochs} epochs, batch 32, {args.threads} threads")
print(f"{'':<12} {'images/s':>9} {'test acc':>9}")
for name, r in results.items():
    if "error" in r:
        print(f"{name:<12} unavailable: {r['error']}")
    else:
        print(f"{name:<12} {r['images_per_sec']:9.0f} {r['test_accuracy']:9.3f}")
mine = results["shadergrad"]["images_per_sec"]
for name in ("keras", "pytorch"):
    if "images_per_sec" in results[name]:
        print(f"shadergrad / {name}: {mine / results[name]['images_per_sec']:.2f}x")

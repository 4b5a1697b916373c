#!/usr/bin/env python3
"""DCGAN on CIFAR-10: shadergrad (cpu backend) against PyTorch CPU, the same
shape, data, batch, optimizer, steps and threads, trained one after the
other in one run; then both sample sets are scored by `shadergrad eval gan`
in the same classifier's features. Prints steps/s, the quality figures and
the ratios.

    cargo build --release
    target/release/shadergrad train cifar10 --out runs/cifar10     # the classifier, once
    python3 benches/peers/compare_gan.py --classifier runs/cifar10/checkpoint.safetensors \
        [--steps 3000] [--width 32] [--batch 64] [--n 10000] [--out runs/gan-compare]

Each framework's steps/s is its whole training loop (data, both updates,
and for shadergrad also its sample grids and checkpoints), from the first
step to the last. Needs `pip install torch numpy pillow`.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--classifier", required=True, help="a `shadergrad train cifar10` checkpoint")
ap.add_argument("--data")
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--width", type=int, default=32)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--n", type=int, default=10000, help="samples scored per framework")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count())))
ap.add_argument("--out", default="runs/gan-compare")
ap.add_argument("--exe", default=os.path.join(ROOT, "target", "release", "shadergrad"))
ap.add_argument("--skip-train", action="store_true",
                help="score the checkpoint and samples an earlier run left in --out")
args = ap.parse_args()

env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", RAYON_NUM_THREADS=str(args.threads),
           SHADERGRAD_THREADS=str(args.threads), SHADERGRAD_DEVICE="cpu")
os.makedirs(args.out, exist_ok=True)
ours_dir = os.path.join(args.out, "shadergrad")
torch_npy = os.path.join(args.out, "pytorch-samples.npy")
data = ["--data", args.data] if args.data else []
shape = ["--steps", str(args.steps), "--width", str(args.width), "--batch", str(args.batch),
         "--seed", str(args.seed)]


def last_json(out):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON line in:\n{out}")


def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return last_json(res.stdout)


summary_path = os.path.join(args.out, "train.json")
if args.skip_train:
    with open(summary_path) as f:
        trained = json.load(f)
else:
    trained = {
        "shadergrad": run([args.exe, "train", "gan", "--json", "--out", ours_dir] + shape + data),
        "pytorch": run([sys.executable, os.path.join(HERE, "train_dcgan_torch.py"), "--json",
                        "--threads", str(args.threads), "--n", str(args.n), "--out", torch_npy]
                       + shape + data),
    }
    with open(summary_path, "w") as f:
        json.dump(trained, f, indent=1)

evaluate = [args.exe, "eval", "gan", "--json", "--classifier", args.classifier, "--n", str(args.n),
            "--seed", str(args.seed)] + data
scores = {
    "shadergrad": run(evaluate + ["--checkpoint", os.path.join(ours_dir, "checkpoint.safetensors")]),
    "pytorch": run(evaluate + ["--images", torch_npy]),
}
with open(os.path.join(args.out, "scores.json"), "w") as f:
    json.dump(scores, f, indent=1)

print(f"\nDCGAN width {args.width}, batch {args.batch}, {args.steps} steps, {args.threads} threads; "
      f"{args.n} samples each, scored in the features of {args.classifier}")
print(f"{'':<30} {'steps/s':>8} {'FCD':>8} {'KCD':>8} {'CS':>6}")


def row(name, speed, s):
    print(f"{name:<30} {speed:>8} {s['fcd']:8.2f} {s['kcd']:8.4f} {s['cs']:6.2f}")


for name in ("shadergrad", "pytorch"):
    row(name, f"{trained[name]['steps_per_sec']:.3f}", scores[name]["generated"])
row("real training images (floor)", "", scores["shadergrad"]["real"])
row(f"untrained generator (ceiling)", "", scores["shadergrad"]["untrained"])
ours, theirs = scores["shadergrad"]["generated"], scores["pytorch"]["generated"]
print(f"steps/s, shadergrad / pytorch: "
      f"{trained['shadergrad']['steps_per_sec'] / trained['pytorch']['steps_per_sec']:.2f}x")
print(f"FCD, shadergrad / pytorch: {ours['fcd'] / theirs['fcd']:.2f}x (lower is better)")
print(f"CS, shadergrad / pytorch: {ours['cs'] / theirs['cs']:.2f}x (higher is better)")
floor, ceiling = scores["shadergrad"]["real"], scores["shadergrad"]["untrained"]
print(f"shadergrad: FCD {ours['fcd'] / ceiling['fcd']:.2f} of the untrained generator's, "
      f"CS {ours['cs'] / floor['cs']:.2f} of the real images'")
print(f"grids: {os.path.join(ours_dir, 'samples')}")

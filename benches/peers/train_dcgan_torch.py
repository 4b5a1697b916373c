#!/usr/bin/env python3
"""DCGAN in PyTorch, the peer of `shadergrad train gan`: the same 32x32
layout (transposed 4x4 convolutions with batch norm and ReLU to tanh; strided
4x4 convolutions with LeakyReLU(0.2) and batch norm to one logit; no biases),
the same init (N(0, 0.02) convolutions, batch-norm scales N(1, 0.02)), data
(CIFAR-10 training images in [-1, 1], full batches, reshuffled per epoch),
batch, optimizer (Adam 2e-4, betas 0.5/0.999), non-saturating loss and
alternating updates, for the same number of steps. It saves --n samples
drawn in evaluation mode as a .npy uint8 [n, 32, 32, 3] array (score them
with `shadergrad eval gan --images FILE`) and prints one JSON line with
steps/s.

    python3 benches/peers/train_dcgan_torch.py --steps 2000 --width 32 --out /tmp/torch-samples.npy
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_data  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--data")
ap.add_argument("--steps", type=int, default=5000)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--width", type=int, default=64)
ap.add_argument("--lr", type=float, default=2e-4)
ap.add_argument("--beta1", type=float, default=0.5)
ap.add_argument("--limit-train", type=int)
ap.add_argument("--n", type=int, default=10000, help="samples to save")
ap.add_argument("--out", help=".npy file for the samples")
ap.add_argument("--threads", type=int, default=int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count())))
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--device", default="cpu")
ap.add_argument("--json", action="store_true")
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
dev = torch.device(args.device)
LATENT = 100


def generator(w):
    def up(i, o):
        return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]
    return nn.Sequential(
        nn.ConvTranspose2d(LATENT, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),
        *up(4 * w, 2 * w), *up(2 * w, w),
        nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False), nn.Tanh())


def discriminator(w):
    return nn.Sequential(
        nn.Conv2d(3, w, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True),
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2, True),
        nn.Conv2d(4 * w, 1, 4, 1, 0, bias=False), nn.Flatten())


def init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


xtr, _, _, _ = cifar_data.load(args.data or cifar_data.default_path())
if args.limit_train:
    xtr, _ = cifar_data.subset(xtr, np.zeros(len(xtr)), args.limit_train, seed=args.seed)
# [N, 3, 32, 32] in [-1, 1], as shadergrad serves them.
real = torch.from_numpy(np.ascontiguousarray(xtr.transpose(0, 3, 1, 2))).float().div(127.5).sub(1.0).to(dev)
G, D = generator(args.width).to(dev), discriminator(args.width).to(dev)
G.apply(init)
D.apply(init)
opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
bce = nn.BCEWithLogitsLoss()
bs = args.batch
per_epoch = len(real) // bs
ones, zeros = torch.ones(bs, 1, device=dev), torch.zeros(bs, 1, device=dev)
order = torch.randperm(len(real))
start = time.perf_counter()
for step in range(args.steps):
    if step % per_epoch == 0:
        order = torch.randperm(len(real))
    x = real[order[(step % per_epoch) * bs:(step % per_epoch + 1) * bs]]
    z = torch.randn(bs, LATENT, 1, 1, device=dev)
    fake = G(z)
    opt_d.zero_grad(set_to_none=True)
    d_real, d_fake = D(x), D(fake.detach())
    d_loss = bce(d_real, ones) + bce(d_fake, zeros)
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    g_loss = bce(D(fake), ones)
    g_loss.backward()
    opt_g.step()
    if step % 100 == 0 and not args.json:
        print(f"step {step}: D {d_loss.item():.4f} G {g_loss.item():.4f}", file=sys.stderr)
if dev.type == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
G.eval()
with torch.no_grad():
    out = []
    for i in range(0, args.n, 500):
        z = torch.randn(min(500, args.n - i), LATENT, 1, 1, device=dev)
        img = G(z).clamp(-1, 1).add(1).mul(127.5).round().byte()
        out.append(img.permute(0, 2, 3, 1).cpu().numpy())
samples = np.concatenate(out)
if args.out:
    np.save(args.out, samples)
print(json.dumps({"framework": "pytorch", "steps": args.steps, "width": args.width, "batch": bs,
                  "d_loss": d_loss.item(), "g_loss": g_loss.item(), "steps_per_sec": args.steps / seconds,
                  "seconds": seconds, "samples": args.out}))

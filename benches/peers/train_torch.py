#!/usr/bin/env python3
"""The seed CNN in PyTorch CPU, same data, batch, optimizer (Adam 1e-3,
eps 1e-7 as Keras) and thread count; --json prints one JSON line whose
images_per_sec is the last epoch's training throughput. `--device cuda`
runs the same eager loop on a GPU (the peer of `shadergrad train --device
gpu`), with the data held on the device as shadergrad holds it.

    python3 benches/peers/train_torch.py --epochs 10 [--device cuda]
"""
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

ap = cifar_data.arg_parser(__doc__)
ap.add_argument("--device", default="cpu", help="cpu or cuda")
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
dev = torch.device(args.device)
if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True


def sync():
    """Wait for queued GPU work, so epoch times cover it."""
    if dev.type == "cuda":
        torch.cuda.synchronize()


xtr, ytr, xte, yte = cifar_data.load_for(args)
to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().to(dev) / 255.0  # noqa: E731
xtr, xte = to_t(xtr), to_t(xte)
ytr, yte = torch.from_numpy(ytr).long().to(dev), torch.from_numpy(yte).long().to(dev)

model = nn.Sequential(
    nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
    nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
)
for m in model:
    if isinstance(m, (nn.Conv2d, nn.Linear)):  # Keras' defaults
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
model = model.to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
loss_fn = nn.CrossEntropyLoss()

start = time.perf_counter()
for epoch in range(args.epochs):
    sync()
    t = time.perf_counter()
    perm = torch.randperm(len(xtr), device=dev)
    total, seen = 0.0, 0
    for i in range(0, len(xtr), args.batch):
        idx = perm[i:i + args.batch]
        loss = loss_fn(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    sync()
    epoch_secs = time.perf_counter() - t
    with torch.no_grad():
        acc = sum((model(xte[j:j + 500]).argmax(1) == yte[j:j + 500]).sum().item()
                  for j in range(0, len(xte), 500)) / len(xte)
    if not args.json:
        print(f"epoch {epoch + 1}: train loss {total / seen:.4f} test acc {acc:.4f} {seen / epoch_secs:.0f} img/s")
result = {"peer": "pytorch", "torch": torch.__version__, "device": args.device, "threads": args.threads,
          "epochs": args.epochs,
          "train_loss": total / seen, "test_accuracy": acc, "images_per_sec": seen / epoch_secs,
          "seconds": time.perf_counter() - start}
print(json.dumps(result))

"""CIFAR-10 for the peer scripts, from the same files shadergrad reads: an
image-folder .tar.gz (train/<class>/*.jpg) or the official binary archive.
Decoded arrays are cached as .npz next to shadergrad's own cache."""
import io
import os
import tarfile

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def default_path():
    for p in (os.environ.get("SHADERGRAD_DATA"), "data/cifar10-jpg.tar.gz", "../shared/data/cifar10-jpg.tar.gz"):
        if p and os.path.exists(p):
            return p
    raise SystemExit("CIFAR-10 not found: pass --data or set SHADERGRAD_DATA")


def load(path):
    """(x_train uint8 [N,32,32,3], y_train, x_test, y_test)."""
    st = os.stat(path)
    cache_dir = os.environ.get("SHADERGRAD_CACHE", os.path.expanduser("~/.cache/shadergrad"))
    cache = os.path.join(cache_dir, f"cifar10-py-{st.st_size}-{int(st.st_mtime)}.npz")
    if os.path.exists(cache):
        d = np.load(cache)
        return d["xtr"], d["ytr"], d["xte"], d["yte"]
    from PIL import Image

    split = {"train": ([], []), "test": ([], [])}
    binary = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = m.name.split("/")
            base = parts[-1]
            if base.endswith(".bin"):
                binary[base] = tar.extractfile(m).read()
            elif len(parts) >= 3 and parts[-3] in split and parts[-2] in CLASSES:
                img = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                split[parts[-3]][0].append(img)
                split[parts[-3]][1].append(CLASSES.index(parts[-2]))
    if binary:
        def records(names):
            raw = np.frombuffer(b"".join(binary[n] for n in names), np.uint8).reshape(-1, 3073)
            return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].astype(np.int64)
        xtr, ytr = records([f"data_batch_{i}.bin" for i in range(1, 6)])
        xte, yte = records(["test_batch.bin"])
    else:
        xtr, ytr = np.stack(split["train"][0]), np.array(split["train"][1])
        xte, yte = np.stack(split["test"][0]), np.array(split["test"][1])
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(cache, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    return xtr, ytr, xte, yte


def subset(x, y, n, seed=0):
    """A fixed random subset (the sources are sorted by class)."""
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[idx], y[idx]


def arg_parser(doc):
    """The flags every peer script takes (the same as `shadergrad train`'s)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--data")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit-train", type=int)
    ap.add_argument("--limit-test", type=int)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SHADERGRAD_THREADS", os.cpu_count())))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    return ap


def load_for(args):
    """Train and test arrays for the parsed flags: the same subsets shadergrad's peers use."""
    xtr, ytr, xte, yte = load(args.data or default_path())
    xtr, ytr = subset(xtr, ytr, args.limit_train)
    xte, yte = subset(xte, yte, args.limit_test, seed=1)
    return xtr, ytr, xte, yte

#!/usr/bin/env bash
# One call on the lent GPU (see ../shared/GPU.md): our kernels and PyTorch
# CUDA's on the same work, then seed-cnn training against PyTorch CUDA eager,
# in the same run. Inner time limits sum to 290 s, so one call fits a
# 15-minute budget with room for a retry. Prepare here (GPU.md's .gl setup first):
#   cargo build --release && strip -o shadergrad-gpu target/release/shadergrad
#   cp ../shared/data/cifar10-jpg.tar.gz .gl/      # 19 MB; the device has no data
# then `run` with carry [".gl", "shadergrad-gpu"], timeout_s 540, and command
#   bash benches/gpu/run.sh
# Results land in $OUT (devices.txt, ours.json, torch.json, train-ours.json,
# train-ours-metrics.csv, train-torch.json) and stream to stdout as they come;
# `shadergrad bench --compare torch.json` or bench_torch.py's table pairs them.
set -u
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export WGPU_BACKEND=vulkan
BIN=./shadergrad-gpu
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
$BIN devices > "$OUT/devices.txt" 2>&1
cat "$OUT/devices.txt"
# Each report is rewritten after every entry: a run cut short keeps its part.
timeout 110 $BIN bench --device gpu --ms 250 --json "$OUT/ours.json" 2>>"$OUT/devices.txt"
timeout 60 python3 benches/peers/bench_torch.py --like "$OUT/ours.json" --device cuda --ms 250 --out "$OUT/torch.json" 2>>"$OUT/devices.txt"
# Training: the same flags as benches/peers/compare_training.py, on the GPU.
DATA=.gl/cifar10-jpg.tar.gz
FLAGS="--data $DATA --epochs 2 --limit-train 10000 --limit-test 1000 --json"
if [ -f "$DATA" ]; then
    timeout 60 $BIN train cifar10 --device gpu --out /tmp/sg-run $FLAGS 2>>"$OUT/devices.txt" | tail -n 1 > "$OUT/train-ours.json"
    # Per-epoch images/s: the peers report the last epoch's.
    cp /tmp/sg-run/metrics.csv "$OUT/train-ours-metrics.csv" 2>/dev/null
    timeout 60 python3 benches/peers/train_torch.py --device cuda $FLAGS 2>>"$OUT/devices.txt" | tail -n 1 > "$OUT/train-torch.json"
else
    echo "no $DATA: training comparison skipped" >> "$OUT/devices.txt"
fi
cat "$OUT/train-ours.json" "$OUT/train-torch.json" 2>/dev/null
tail -n 20 "$OUT/devices.txt"

#!/usr/bin/env bash
# One call on the lent GPU (see ../shared/GPU.md): our kernels and PyTorch
# CUDA's on the same work, then seed-cnn training against PyTorch CUDA eager,
# in the same run. Prepare here (GPU.md's .gl setup first):
#   cargo build --release && strip -o shadergrad-gpu target/release/shadergrad
#   cp ../shared/data/cifar10-jpg.tar.gz .gl/      # 19 MB; the device has no data
# then `run` with carry [".gl", "shadergrad-gpu"], timeout_s 540, and command
#   bash benches/gpu/run.sh
# Results land in $OUT (devices.txt, ours.jsonl, torch.jsonl,
# train-ours.json, train-ours-metrics.csv, train-torch.json).
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
timeout 240 $BIN bench all --device gpu --sizes 1024,2048,4096 --ms 1500 --json > "$OUT/ours.jsonl" 2>>"$OUT/devices.txt"
timeout 120 python3 benches/gpu/torch_kernels.py --sizes 1024,2048,4096 --ms 1500 > "$OUT/torch.jsonl" 2>>"$OUT/devices.txt"
# Training: the same flags as benches/peers/compare_training.py, on the GPU.
DATA=.gl/cifar10-jpg.tar.gz
FLAGS="--data $DATA --epochs 2 --limit-train 10000 --limit-test 1000 --json"
if [ -f "$DATA" ]; then
    timeout 150 $BIN train cifar10 --device gpu --out /tmp/sg-run $FLAGS 2>>"$OUT/devices.txt" | tail -n 1 > "$OUT/train-ours.json"
    # Per-epoch images/s: the peers report the last epoch's.
    cp /tmp/sg-run/metrics.csv "$OUT/train-ours-metrics.csv" 2>/dev/null
    timeout 120 python3 benches/peers/train_torch.py --device cuda $FLAGS 2>>"$OUT/devices.txt" | tail -n 1 > "$OUT/train-torch.json"
else
    echo "no $DATA: training comparison skipped" >> "$OUT/devices.txt"
fi
cat "$OUT/devices.txt" "$OUT/ours.jsonl" "$OUT/torch.jsonl" "$OUT/train-ours.json" "$OUT/train-torch.json" 2>/dev/null

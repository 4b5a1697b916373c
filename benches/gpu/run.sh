#!/usr/bin/env bash
# One call on the lent GPU (see ../shared/GPU.md): our kernels and PyTorch
# CUDA's on the same work, in the same run. Prepare here:
#   cargo build --release && strip -o shadergrad-gpu target/release/shadergrad
# then `run` with carry [".gl", "shadergrad-gpu"] and command
#   bash benches/gpu/run.sh
# Results land in $OUT (devices.txt, ours.jsonl, torch.jsonl).
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
cat "$OUT/devices.txt" "$OUT/ours.jsonl" "$OUT/torch.jsonl"

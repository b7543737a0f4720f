#!/usr/bin/env bash
# GPU speed in a few minutes: `vgg bench` on burn's wgpu backend (and on cuda where that feature
# builds: it downloads LLVM at build time) beside PyTorch on CUDA, on the standard workloads
# plus VGG-16 training at batch 64 on 224x224. Prints a Markdown table; files in $OUT.
#
#   bench/gpu.sh [RUNS]          (RUNS timed runs per workload, median reported; default 5)
#                                (VGG_GPU_FLEX=0 leaves out the flex column)
#
# Needs: cargo, or a vgg built elsewhere with `--features wgpu` (VGG_WGPU=PATH; for a machine
# with no network or no Rust: `cargo build --release --features wgpu && strip -o
# .device/vgg-wgpu target/release/vgg` on a build machine, then copy .device/ over); a
# Vulkan/Metal/DX12 GPU driver and the Vulkan loader (libvulkan1) for wgpu; python3 with torch +
# torchvision built for CUDA for the PyTorch column (skipped, and said, when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
OUT="${OUT:-target/bench-gpu}"
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi") >"$OUT/gpu.txt"
nproc >"$OUT/cpus.txt"

bench() { # BINARY DEVICE NAME
    "$1" bench --device "$2" --json --runs "$RUNS" >"$OUT/$3.json"
    "$1" bench --device "$2" --json --runs "$RUNS" --arch vgg16 --mode train --batch 64 \
        >"$OUT/$3-train64.json"
    # Mixed precision (float16 with loss scaling), where the device computes in it.
    "$1" bench --device "$2" --json --runs "$RUNS" --arch vgg16 --mode train --batch 64 \
        --precision f16 >"$OUT/$3-train64-f16.json" || rm -f "$OUT/$3-train64-f16.json"
}

if [ -n "${VGG_WGPU:-}" ]; then
    cp "$VGG_WGPU" "$OUT/vgg-wgpu"
else
    cargo build --release --features wgpu
    cp target/release/vgg "$OUT/vgg-wgpu"
fi
bench "$OUT/vgg-wgpu" wgpu wgpu || echo "vgg on wgpu failed: see above" >&2

if command -v cargo >/dev/null && cargo build --release --features cuda 2>"$OUT/cuda-build.log"; then
    cp target/release/vgg "$OUT/vgg-cuda"
    bench "$OUT/vgg-cuda" cuda cuda || echo "vgg on cuda failed: see above" >&2
else
    echo "the cuda feature did not build here (no cargo, or see $OUT/cuda-build.log); no cuda rows" >&2
fi

if python3 -c 'import torch, torchvision; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 bench/pytorch.py --device cuda --gpu-set --runs "$RUNS" >"$OUT/pytorch-cuda.json" ||
        { echo "PyTorch on CUDA failed: see above" >&2; rm -f "$OUT/pytorch-cuda.json"; }
else
    echo "no PyTorch with CUDA here: no PyTorch column" >&2
fi

# flex (the CPU) last: a reference column, the slowest to run on a GPU machine's CPU.
[ "${VGG_GPU_FLEX:-1}" = 0 ] || bench "$OUT/vgg-wgpu" flex flex || echo "vgg on flex failed: see above" >&2

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def rows(name):
    rows = []
    for f in (f"{name}.json", f"{name}-train64.json", f"{name}-train64-f16.json"):
        p = os.path.join(out, f)
        if os.path.exists(p):
            rows += json.load(open(p))
    return rows
key = lambda r: (r["variant"], r["mode"], r["batch"], tuple(r["input"]), r["compact"], r.get("precision", "f32"))
cols = {n: {key(r): r for r in rows(n)} for n in ("flex", "wgpu", "cuda")}
torch = {}
p = os.path.join(out, "pytorch-cuda.json")
if os.path.exists(p):
    torch = {key(r): r for r in json.load(open(p))}
print("GPU:", open(os.path.join(out, "gpu.txt")).read().strip(), "| CPU threads:", open(os.path.join(out, "cpus.txt")).read().strip())
print("| workload | vgg flex img/s | vgg wgpu img/s | vgg cuda img/s | PyTorch CUDA img/s | wgpu / PyTorch |")
print("|---|---:|---:|---:|---:|---:|")
cell = lambda d, k: f"{d[k]['images_per_s']:.1f}" if k in d else "-"
for k in cols["wgpu"]:
    v, m, b, i, c, p = k
    ratio = f"{cols['wgpu'][k]['images_per_s'] / torch[k]['images_per_s']:.2f}x" if k in torch else "-"
    print(f"| {v}{' compact' if c else ''} {m} b{b} {i[1]}x{i[2]}{'' if p == 'f32' else ' ' + p} | {cell(cols['flex'], k)} | {cell(cols['wgpu'], k)} | "
          f"{cell(cols['cuda'], k)} | {cell(torch, k)} | {ratio} |")
PY

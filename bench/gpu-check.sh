#!/usr/bin/env bash
# GPU correctness and where the time goes, in a few minutes of a GPU machine (run after, or
# instead of, bench/gpu.sh):
#  1. the activations of a full-size VGG-16 (torchvision's random initialisation, seed 0) at
#     conv1_2, conv3_3, conv5_3, pool5 and fc7, on flex and on the GPU, for batches of 2, 8 and
#     64 images at 224x224: the largest difference relative to the largest activation, per
#     layer and batch (float32 on both: expect ~1e-5);
#  2. `vgg eval` of the committed Fashion-MNIST run (docs/fmnist-vgg16bn) on both: equal scores;
#  3. `vgg bench --profile` of VGG-16 training at batch 64 and of the compact workload on the
#     GPU (each layer's forward and forward + backward alone);
#  4. flex against PyTorch on this machine's CPU (bench/pytorch.py).
#
#   VGG=PATH bench/gpu-check.sh [DEVICE]     (DEVICE default wgpu; VGG: a --features wgpu build)
#
# Needs python3 with torch, torchvision and numpy. Files and logs in $OUT (default
# target/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
G="${1:-wgpu}"
V="${VGG:-target/release/vgg}"
OUT="${OUT:-target/gpu-check}"
T="$(mktemp -d)"
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

python3 - "$T" <<'PY'
import sys, torch, torchvision
torch.manual_seed(0)
torch.save(torchvision.models.vgg16().eval().state_dict(), sys.argv[1] + "/vgg16.pth")
PY
for n in 2 8 64; do
    images=()
    for _ in $(seq "$n"); do images+=(crates/vgg/tests/fixtures/chelsea.png); done
    # Half of the images flipped would need another file: the same image n times is enough to
    # see a batch size the GPU computes wrongly.
    for d in flex "$G"; do
        "$V" features -w "$T/vgg16.pth" --arch vgg16 --at conv1_2,conv3_3,conv5_3,pool5,fc7 \
            --force -o "$T/b$n-$d" --device "$d" "${images[@]}" >"$T/log" 2>&1 ||
            { cat "$T/log"; echo "features on $d at batch $n failed"; }
    done
    python3 - "$T/b$n-flex" "$T/b$n-$G" "$n" <<'PY'
import sys
import numpy as np
a, b, n = sys.argv[1], sys.argv[2], sys.argv[3]
for k in "conv1_2 conv3_3 conv5_3 pool5 fc7".split():
    try:
        x, y = np.load(f"{a}/{k}.npy"), np.load(f"{b}/{k}.npy")
    except OSError as e:
        print(f"batch {n} {k}: {e}")
        continue
    d, s = float(abs(x - y).max()), float(abs(x).max())
    print(f"batch {n} {k} {x.shape}: max |flex - GPU| {d:.3g}, max |flex| {s:.3g}, relative {d / s:.3g}")
PY
done | tee "$OUT/features.txt"

for d in flex "$G"; do
    echo "eval on $d: $("$V" eval -w docs/fmnist-vgg16bn --data demo --method center,dense --json \
        --device "$d" | tr -d ' \n')"
done | tee "$OUT/eval.txt"

echo "== where a training step goes on $G"
timeout 150 "$V" bench --profile --device "$G" --arch vgg16 --mode train --batch 64 --runs 2
timeout 60 "$V" bench --profile --device "$G" --arch vgg16_bn --compact --input 3x32x32 \
    --mode train --batch 64 --runs 2

echo "== this machine's CPU: flex against PyTorch"
grep -m1 'model name' /proc/cpuinfo
grep -o -m1 -w avx512f /proc/cpuinfo || echo "no avx512f"
timeout 150 "$V" bench --device flex --json --runs 3 >"$OUT/flex-cpu.json"
timeout 150 python3 bench/pytorch.py --device cpu --runs 3 >"$OUT/pytorch-cpu.json"
python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
try:
    a = json.load(open(o + "/flex-cpu.json")); b = json.load(open(o + "/pytorch-cpu.json"))
except Exception as e:
    sys.exit(f"no CPU comparison: {e}")
key = lambda r: (r["variant"], r["mode"], r["batch"], tuple(r["input"]), r["compact"])
torch = {key(r): r for r in b}
for r in a:
    t = torch.get(key(r))
    if t:
        print(f"{r['variant']} {r['mode']} b{r['batch']}: vgg {r['median_ms']:.1f} ms, "
              f"PyTorch {t['median_ms']:.1f} ms: {t['median_ms'] / r['median_ms']:.2f}x")
PY
rm -rf "$T"

#!/usr/bin/env bash
# Does fine-tuning pay? A quarter-width VGG-11-BN pretrained on Fashion-MNIST classes 0-4, then
# fine-tuned on 300 images of classes 5-9, against the same network trained from scratch on them;
# every run scored once on the 5,000 test images of classes 5-9. Then the speed and memory that
# --freeze saves. Needs Debian's dataset-fashion-mnist and a release build.
#
#   bench/finetune.sh [WORK_DIR]        (default /tmp/vgg-finetune; about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/vgg-finetune}"
V=target/release/vgg
D="$W/data"
[ -d "$D/test" ] || python3 bench/fmnist_subsets.py "$D"
SCHEDULE=(--epochs 20 --batch 32 --micro-batch 32 --patience 4 --quiet)
train() { # NAME ARGS...
    local name=$1; shift
    [ -f "$W/$name/state.json" ] || "$V" train --out "$W/$name" --force "$@" 2>&1 | tail -2
}
train pretrain --data "$D/pretrain" --epochs 5 --quiet
train scratch --data "$D/few" --val "$D/val" "${SCHEDULE[@]}"
train tune-all --pretrained "$W/pretrain" --data "$D/few" --val "$D/val" "${SCHEDULE[@]}"
train tune-lr0.1 --pretrained "$W/pretrain" --lr-pretrained 0.1 --data "$D/few" --val "$D/val" "${SCHEDULE[@]}"
train tune-frozen --pretrained "$W/pretrain" --freeze features --data "$D/few" --val "$D/val" "${SCHEDULE[@]}"
echo "| run | test top-1 accuracy (5,000 images of classes 5-9) | epochs | training time |"
echo "|---|---:|---:|---:|"
for run in scratch tune-all tune-lr0.1 tune-frozen; do
    acc=$("$V" eval --data "$D/test" -w "$W/$run" --json | python3 -c 'import json,sys; print("%.2f%%" % (100 * json.load(sys.stdin)[0]["top1_acc"]))')
    python3 - "$W/$run" "$acc" <<'PY'
import json, sys
state = json.load(open(sys.argv[1] + "/state.json"))
secs = sum(r["seconds"] for r in state["history"])
print(f"| {sys.argv[1].rsplit('/', 1)[1]} | {sys.argv[2]} | {len(state['history'])} | {secs:.0f} s |")
PY
done
echo
echo "Speed and memory of one epoch on 5,000 images, batch 64:"
for freeze in none features conv5_1; do
    flag=(); [ "$freeze" = none ] || flag=(--freeze "$freeze")
    /usr/bin/time -f "peak RSS %M KB" "$V" train --pretrained "$W/pretrain" "${flag[@]}" --data "$D/test" \
        --epochs 1 --batch 64 --micro-batch 64 --out "$W/speed-$freeze" --force --quiet 2>&1 |
        grep -E "^epoch|peak RSS" | sed "s/^/freeze $freeze: /"
done

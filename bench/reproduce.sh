#!/usr/bin/env bash
# The paper's orderings (Tables 3-6) at a scale a 2-core CPU trains: configurations A, A-LRN, B,
# C, D, E at a quarter of the paper's widths, one budget for all (same epochs and schedule), C, D
# and E also with scale jittering (the paper jitters only those, Table 3), each evaluated by
# centre crop, dense, multi-crop and dense+multi-crop (Table 5), and an ensemble of the best two
# (Table 6). Writes docs/REPRODUCTION-table.md and docs/reproduction-val.svg.
#
#   bench/reproduce.sh [WORK_DIR]          (default runs/reproduce)
#
# Resumable: a cell whose eval.json exists is not redone; a cell cut short resumes from its
# last checkpoint (`vgg train --resume`). Environment:
#   DATA=DIR    an IDX (Fashion-MNIST) or CIFAR-10 folder (default Debian's Fashion-MNIST)
#   EPOCHS=N    the budget of every cell (default 6)
#   SEEDS="1 2" the seeds of each cell (default "1")
#   LIMIT=N     test images the four methods score (default 2000: multi-crop at three scales
#               is 150 forwards an image); the centre crop always scores every test image
#   RANKS=N     MPI ranks per training run when built with --features mpi (default 2)
#   CELLS="A D-jit ..."  only these cells
# Needs a release build (`cargo build --release`, with `--features mpi` for RANKS > 1).
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-runs/reproduce}"
V="${VGG:-target/release/vgg}"
DATA="${DATA:-/usr/share/datasets/fashion-mnist}"
EPOCHS="${EPOCHS:-6}"
SEEDS="${SEEDS:-1}"
LIMIT="${LIMIT:-2000}"
RANKS="${RANKS:-2}"
mkdir -p "$W"
start=$(date +%s)

# Deviations from the paper, the same for every cell: BatchNorm after each convolution (so that
# the deep nets train from scratch in a few epochs; the paper initialised its deep nets from A's
# weights and trained 74 epochs), a quarter of its widths, 28x28 images upscaled.
COMMON=(--bn --width 0.25 --epochs "$EPOCHS" --patience 1 --max-reductions 2 --quiet)
FIXED=(--scale 36)        # S = 36, crops of 32 (the paper: S = 256, crops of 224)
JITTER=(--scale 32,48)    # S in [32, 48] (the paper: [256, 512])
declare -A ARGS=(
    [A]="--arch A ${FIXED[*]}"
    [A-LRN]="--arch A-LRN ${FIXED[*]}"
    [B]="--arch B ${FIXED[*]}"
    [C]="--arch C ${FIXED[*]}"
    [C-jit]="--arch C ${JITTER[*]}"
    [D]="--arch D ${FIXED[*]}"
    [D-jit]="--arch D ${JITTER[*]}"
    [E]="--arch E ${FIXED[*]}"
    [E-jit]="--arch E ${JITTER[*]}"
)
# Test scales Q: {S-4, S, S+4} for a fixed S, {Smin, mid, Smax} for a jittered one (Table 4).
declare -A SCALES=([fixed]="32,36,40" [jit]="32,40,48")
CELLS=(${CELLS:-A A-LRN B C C-jit D D-jit E E-jit})

launch() {
    if [ "$RANKS" -gt 1 ] && ldd "$V" 2>/dev/null | grep -q libmpi; then
        mpirun --allow-run-as-root -np "$RANKS" --bind-to none "$V" "$@"
    else
        "$V" "$@"
    fi
}

for cell in "${CELLS[@]}"; do
    for seed in $SEEDS; do
        dir="$W/$cell-s$seed"
        [ -f "$dir/eval.json" ] && continue
        t0=$(date +%s)
        if [ -f "$dir/state.json" ]; then
            launch train --resume "$dir" --quiet
        else
            # shellcheck disable=SC2086
            launch train --data "$DATA" ${ARGS[$cell]} "${COMMON[@]}" --seed "$seed" --out "$dir"
        fi
        t1=$(date +%s)
        kind=fixed; [[ $cell == *-jit ]] && kind=jit
        # The centre crop at Q = S, or Q = (Smin + Smax) / 2 for a jittered S (Table 3), on
        # every test image (the configurations' ordering), then the four methods over the test
        # scales on the first LIMIT (Table 5).
        q=36; [ $kind = jit ] && q=40
        "$V" eval --data "$DATA" -w "$dir" --method center --scales $q --json \
            >"$dir/center.json.tmp"
        mv "$dir/center.json.tmp" "$dir/center.json"
        "$V" eval --data "$DATA" -w "$dir" --method center,dense,multicrop,dense+multicrop \
            --scales "${SCALES[$kind]}" --limit "$LIMIT" --json >"$dir/eval.json.tmp"
        mv "$dir/eval.json.tmp" "$dir/eval.json"
        echo "{\"train_s\": $((t1 - t0)), \"eval_s\": $(($(date +%s) - t1))}" >"$dir/times.json"
        echo "$cell seed $seed: done in $(($(date +%s) - t0)) s"
    done
done

# The two configurations with the best validation error (first seed).
read -r best1 best2 < <(python3 bench/reproduce_table.py "$W" --best-two)
# A work folder of an earlier version of this script names seed 1's ensemble ensemble.json.
if [ -f "$W/ensemble.json" ] && [ ! -f "$W/ensemble-s1.json" ]; then
    mv "$W/ensemble.json" "$W/ensemble-s1.json"
fi
# For each seed whose two members finished: the ensemble and each member alone, by dense
# evaluation over the same test scales, on every test image (Table 6 combines dense outputs
# too; multi-crop would cost 150 forwards an image).
for seed in $SEEDS; do
    out="$W/ensemble-s$seed.json"
    [ -f "$out" ] && continue
    [ -f "$W/$best1-s$seed/eval.json" ] && [ -f "$W/$best2-s$seed/eval.json" ] || continue
    for m in "$best1" "$best2"; do
        "$V" eval --data "$DATA" -w "$W/$m-s$seed" --method dense --scales 32,40,48 --json \
            >"$W/ensemble-$m-s$seed.json.tmp"
        mv "$W/ensemble-$m-s$seed.json.tmp" "$W/ensemble-$m-s$seed.json"
    done
    "$V" eval --data "$DATA" -w "$W/$best1-s$seed" -w "$W/$best2-s$seed" --method dense \
        --scales 32,40,48 --json >"$out.tmp"
    mv "$out.tmp" "$out"
done
python3 bench/reproduce_table.py "$W" --svg docs/reproduction-val.svg >docs/REPRODUCTION-table.md
echo "table: docs/REPRODUCTION-table.md; curves: docs/reproduction-val.svg;" \
    "this invocation took $(($(date +%s) - start)) s"

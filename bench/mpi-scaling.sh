#!/usr/bin/env bash
# Data-parallel training on this machine: 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1
# thread (MPI on loopback), one epoch of the default demo run each; prints images/s and the
# seconds rank 0 spent in all-reduce. Usage: bench/mpi-scaling.sh [extra vgg train flags]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --features mpi -q
VGG=target/release/vgg
OUT=$(mktemp -d)
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
run() { # name, threads per rank, launcher...
    local name=$1 threads=$2; shift 2
    "$@" train --threads "$threads" --epochs 1 --quiet --out "$OUT/$name" "${EXTRA[@]}" \
        2>"$OUT/$name.err" || { cat "$OUT/$name.err"; exit 1; }
}
EXTRA=("$@")
run 1x1 1 $VGG
run 1x2 2 $VGG
run 2x1 1 $MPIRUN -np 2 $VGG
printf "%-22s %10s %10s %16s\n" "ranks x threads" "images/s" "epoch s" "all-reduce s"
for name in 1x1 1x2 2x1; do
    python3 - "$OUT/$name/log.jsonl" "$name" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"{sys.argv[2]:<22} {r['images_per_s']:>10.1f} {r['seconds']:>10.1f} {r.get('comm_seconds', 0):>16.2f}")
PY
done
rm -rf "$OUT"

#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input, with libFuzzer, on the stable
# toolchain (coverage instrumentation by LLVM's sanitizer-coverage pass, no sanitizer).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 20 s, every target)
#
# One instrumented binary, `parsers`, fuzzes the parser named by VGG_FUZZ_PARSER. Each parser
# starts from crates/vgg/tests/hostile/TARGET (small valid seeds, seed-*, and the
# inputs that once crashed, crash-*; the test suite replays them all); new interesting inputs go
# to fuzz/target/corpus. A crash, a timeout (> 10 s) or an allocation over 2 GB stops the run
# with its input saved in fuzz/target/artifacts/TARGET: once fixed, copy it to
# crates/vgg/tests/hostile/TARGET/crash-NAME so the suite keeps replaying it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-20}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(safetensors pth bpk caffe onnx keras image idx cifar config state layers)
fi
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# The binaries are run from fuzz/target below, whatever CARGO_TARGET_DIR the caller has set.
export CARGO_TARGET_DIR=target
# --target keeps build scripts and proc-macros uninstrumented.
cargo build --release --target "$TRIPLE" --bin parsers
total=0
for t in "${TARGETS[@]}"; do
    mkdir -p "target/corpus/$t" "target/artifacts/$t"
    log="target/fuzz-$t.log"
    if ! VGG_FUZZ_PARSER="$t" "target/$TRIPLE/release/parsers" \
        "target/corpus/$t" "../crates/vgg/tests/hostile/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="target/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t FAILED; the input is in fuzz/target/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz: $t: ${runs:-0} executions in ${SECONDS_PER_TARGET} s, no failure"
    total=$((total + ${runs:-0}))
done
echo "fuzz: $total executions in all"

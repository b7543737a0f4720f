#!/usr/bin/env bash
# Every test of the project, on a fresh machine, in one command (what .ci/run runs):
#  1. the system packages the tests need (Open MPI, and libclang for the `mpi` crate's
#     bindings; Mesa's Vulkan drivers, whose lavapipe is the GPU device of the wgpu tests):
#     installed when run as root with apt-get, otherwise named with the command that installs
#     them;
#  2. the test suite, one build for every test binary: cargo test --workspace --features mpi,wgpu
# The library as a crate that depends on it with `default-features = false` builds it: no
# Keras, no downloads, and a clear error where they would be needed.
cargo test -p vgg --no-default-features --lib
#     (the wgpu tests run on lavapipe, `--device wgpu-cpu`);
#     then the library's unit tests without its default features (no Keras, no downloads);
#  3. every parser fuzzed for VGG_FUZZ_SECONDS seconds each (default 15; 0 skips), coverage-guided
#     (fuzz/run.sh).
set -euo pipefail
cd "$(dirname "$0")"

PKGS=(libopenmpi-dev openmpi-bin libclang-dev mesa-vulkan-drivers)
if command -v dpkg >/dev/null; then
    missing=()
    for p in "${PKGS[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "test.sh: installing ${missing[*]} (for the MPI and GPU tests)"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
                { apt-get update >/dev/null &&
                    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
        else
            echo "test.sh: missing packages: ${missing[*]}" >&2
            echo "  install them with: sudo apt-get install ${missing[*]}" >&2
            exit 1
        fi
    fi
elif ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
    echo "test.sh: the MPI tests need Open MPI (mpicc, mpirun) and libclang; install them" >&2
    echo "  (Debian/Ubuntu: apt-get install ${PKGS[*]}; macOS: brew install open-mpi llvm)" >&2
    exit 1
fi

# The Vulkan loader wants a runtime directory; without one it warns on every device it opens.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --workspace --features mpi,wgpu
# The library as a crate that depends on it with `default-features = false` builds it: no
# Keras, no downloads, and a clear error where they would be needed.
cargo test -p vgg --no-default-features --lib

FUZZ_SECONDS="${VGG_FUZZ_SECONDS:-15}"
if [ "$FUZZ_SECONDS" != 0 ]; then
    fuzz/run.sh "$FUZZ_SECONDS"
fi

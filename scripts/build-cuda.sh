#!/usr/bin/env bash
# Builds `grail` (and, with --tests, the grail-policy test executables) with the `cuda` feature
# on a machine without a system CUDA toolkit: nvcc, the CUDA headers and the link-time
# libraries come from NVIDIA's PyPI wheels (CUDA 13.0, which driver >= 580 runs).
#
#   scripts/build-cuda.sh [--tests] [--toolkit-only]
#
# Environment (all optional):
#   GRAIL_CUDA_TK     where the wheels are installed (default: ~/.cache/grail/cuda-13.0)
#   CUDA_COMPUTE_CAP  GPU architecture of the kernels (default 90: H100/H200)
#   CARGO_TARGET_DIR  build folder (default: target/cuda, so CPU builds are not invalidated)
#
# At run time candle's cudarc opens libcuda (driver), libcublas, libcublasLt, libcurand and
# libnvrtc with dlopen, and `grail` links libcudart.so.13: on the GPU machine put the lib
# folders of a CUDA 13 install on LD_LIBRARY_PATH (e.g. PyTorch cu130's pip wheels:
# `export LD_LIBRARY_PATH=$(echo /path/to/site-packages/nvidia/*/lib | tr ' ' :)`).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

build_tests=0
toolkit_only=0
for arg in "$@"; do
    case "$arg" in
        --tests) build_tests=1 ;;
        --toolkit-only) toolkit_only=1 ;;
        *) echo "unknown argument: $arg (expected --tests or --toolkit-only)" >&2; exit 2 ;;
    esac
done

tk="${GRAIL_CUDA_TK:-$HOME/.cache/grail/cuda-13.0}"
cuda_root="$tk/nvidia/cu13"
# CUDA 13.0.2 metapackage: pins nvcc 13.0.88, cudart 13.0.96, cuBLAS 13.1, cuRAND 10.4, NVRTC.
# crt and nvvm hold nvcc's own headers and cicc; cccl the C++ headers the kernels include.
wheels="cuda-toolkit[nvcc,cudart,cublas,curand,nvrtc,cccl,crt,nvvm]==13.0.2"

if [ ! -x "$cuda_root/bin/nvcc" ]; then
    echo "installing the CUDA 13.0 toolkit wheels into $tk"
    python3 -m pip install --quiet --no-compile --target "$tk" "$wheels"
fi
# candle links cudarc with `dynamic-linking`: the linker wants unversioned names (the binary
# records the sonames, resolved on the GPU machine through LD_LIBRARY_PATH).
for lib in cudart.so.13 nvrtc.so.13 curand.so.10 cublas.so.13 cublasLt.so.13; do
    ln -sf "lib$lib" "$cuda_root/lib/lib${lib%%.so.*}.so"
done
"$cuda_root/bin/nvcc" --version | tail -1

export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
export NVCC="$cuda_root/bin/nvcc"
export PATH="$cuda_root/bin:$PATH"
export LIBRARY_PATH="$cuda_root/lib:$cuda_root/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda}"

# libcuda.so comes with the driver, not with the toolkit wheels. Link against a stub that
# defines every driver symbol cudarc references (soname libcuda.so.1, like NVIDIA's own stub);
# at run time the driver's real libcuda.so.1 is loaded instead.
stub="$cuda_root/lib/stubs"
if [ ! -f "$stub/libcuda.so" ]; then
    echo "building the libcuda.so link stub"
    mkdir -p "$stub"
    # cudarc's driver symbols: fetch the crate and list the cu* functions its bindings declare.
    cargo fetch --quiet
    cudarc_src="$(dirname "$(cargo metadata --format-version 1 --all-features \
        | python3 -c 'import json,sys
pkgs = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in pkgs if p["name"] == "cudarc"))')")"
    grep -rhoE '\bfn cu[A-Z][A-Za-z0-9_]*\(' "$cudarc_src/src/driver/sys" \
        | sed -e 's/^fn //' -e 's/($//' | sort -u \
        | awk '{ print "void " $1 "(void) {}" }' >"$stub/libcuda_stub.c"
    if [ "$(wc -l <"$stub/libcuda_stub.c")" -lt 100 ]; then
        echo "found too few driver symbols in $cudarc_src" >&2
        rm -f "$stub/libcuda_stub.c"
        exit 1
    fi
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/libcuda_stub.c"
fi

if [ "$toolkit_only" = 1 ]; then
    echo "toolkit ready: CUDA_ROOT=$CUDA_ROOT"
    exit 0
fi

cargo build --release -p grail-runtime --features cuda
echo "built $CARGO_TARGET_DIR/release/grail"
if [ "$build_tests" = 1 ]; then
    # Prints the test executables' paths (one JSON line each) for copying to a GPU machine.
    cargo test --release -p grail-policy --features cuda --no-run --message-format=json \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
fi

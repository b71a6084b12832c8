#!/usr/bin/env bash
# Lays out a CUDA toolkit root from NVIDIA's PyPI wheels, for building the `cuda` feature on a
# machine with no GPU and no system toolkit: `cargo xtask build-cuda` calls this.
#
# Usage: cuda-toolkit.sh ROOT   (idempotent; ROOT/.complete marks a finished layout)
#
# CUDA 13.0 wheels: newer toolkits emit code the GPU machines' driver (580) cannot load.
# candle's cudarc links libcuda when the binary is linked, and libcuda ships with the driver,
# not the toolkit, so the link is satisfied by a stub built from the driver API's symbol names;
# the real library is found at run time on the GPU machine.
set -euo pipefail

root=$(realpath -m "$1")
[ -e "$root/.complete" ] && exit 0
rm -rf "$root"
mkdir -p "$root"

python3 -m venv "$root/venv"
"$root/venv/bin/python" -m pip install --quiet --no-deps \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14

cu=$(echo "$root"/venv/lib/python3*/site-packages/nvidia/cu13)
for dir in bin include nvvm; do
    ln -s "$cu/$dir" "$root/$dir"
done

# Unversioned names for the linker (the wheels ship only libfoo.so.N).
mkdir -p "$root/lib64/stubs"
for lib in "$cu"/lib/*.so.*; do
    name=$(basename "$lib")
    ln -sf "$lib" "$root/lib64/$name"
    ln -sf "$lib" "$root/lib64/${name%%.so.*}.so"
done

# The stub libcuda: every driver entry point cudarc can call, each a function that fails.
cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -name 'cudarc-*' | sort -V | tail -1)
[ -n "$cudarc" ] || { echo "cudarc sources not found: run cargo fetch first" >&2; exit 1; }
grep -o 'load::<_F>("cu[A-Za-z0-9_]*")' "$cudarc/src/driver/sys/mod.rs" |
    sed 's/.*("\(.*\)")/int \1(void) { return 999; }/' | sort -u >"$root/lib64/stubs/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/stubs/libcuda.so" \
    "$root/lib64/stubs/cuda_stub.c"
# Only for a smoke run of the binary on this machine (the loader asks for the soname).
ln -sf libcuda.so "$root/lib64/stubs/libcuda.so.1"

"$root/bin/nvcc" --version | tail -2
touch "$root/.complete"

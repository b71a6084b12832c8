#!/usr/bin/env bash
# whisk's GPU check in one call, from a bundle made by `cargo xtask gpu-bundle`:
#
#   bash target/gpu-bundle/gpu-check.sh               # on the GPU machine; report in $OUT
#   bash target/gpu-bundle/gpu-check.sh --cpu-proof   # here: same binary and steps, on the CPU
#
# Unpacks the binary and the model, puts cuBLAS, cuRAND and the CUDA runtime from the NVIDIA
# wheels of the machine's python3 on LD_LIBRARY_PATH (nothing of the toolkit is carried), and
# runs gpu_check.py, which writes report.md and report.json to $OUT (default: ./gpu-check-out).
# WHISK_EXTRA_LIBS adds library folders first (the CPU proof's stub libcuda).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/gpu-check-out}
mode=gpu
device=cuda:0
if [ "${1:-}" = "--cpu-proof" ]; then
    mode=cpu-proof
    device=cpu
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Python's tarfile where the image has no xz.
tar -xJf "$here/payload.tar.xz" -C "$work" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$here/payload.tar.xz" "$work"

libs=$(python3 - <<'PY'
import glob, os, site
roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
wanted = ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudart.so.13"]
dirs = []
for root in roots:
    for name in wanted:
        for path in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True):
            if os.path.dirname(path) not in dirs:
                dirs.append(os.path.dirname(path))
print(":".join(dirs))
PY
)
for dir in "$libs" "${WHISK_EXTRA_LIBS:-}"; do
    [ -n "$dir" ] && LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ! "$work/bin/whisk" --version; then
    ldd "$work/bin/whisk" | tee "$out/ldd.txt" || true
    echo "the binary does not start: see $out/ldd.txt" >&2
    exit 1
fi
python3 "$here/gpu_check.py" --bundle "$here" --work "$work" --out "$out" --device "$device" --mode "$mode"

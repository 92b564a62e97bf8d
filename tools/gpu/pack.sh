#!/usr/bin/env bash
# Packs what a run on the lent GPU machine needs (tools/gpu/device-run.sh) into parts .gpu/c0 .. .gpu/cN
# (git-ignored), each small enough to travel in one device call beside a working tree trimmed of the
# model files (64 MiB per call in all):
#   - onnxruntime-gpu's wheel unpacked and recompressed with xz (255 MB as a wheel, about 200 MB here);
#   - the service's web stack as wheels for Python 3.12 (pyproject's pins; numpy stays the host's);
#   - the served version's FP16 file, the first $IMAGES catalogue JPEGs as images-000.tar;
#   - wrk (with its libluajit) and hey from this machine.
# Run from the project root: tools/gpu/pack.sh. PART (default 61m) sets the part size. Before the device calls,
# delete the tracked model files from the working tree (they travel in the parts), and restore them after
# with `git checkout -- models bench/results` (files under bench/results that git does not track are lost):
#   rm -rf models/product-classifier/3 bench/results && rm -f models/product-classifier/4/model.*onnx* \
#     models/product-classifier/*/*.png
# The tree is then about 1 MB, so tree + one part stay under 64 MiB.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
ORT_VERSION=${ORT_VERSION:-1.31.1}
VERSION=${VERSION:-4}
IMAGES=${IMAGES:-1024}
DATA=${DATA:-../shared/data/products}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
mkdir -p "$work/p/bin" "$work/p/lib" "$work/ort"
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/dl" "onnxruntime-gpu==$ORT_VERSION"
unzip -q "$work"/dl/onnxruntime_gpu-*.whl -d "$work/ort"
tar -C "$work/ort" -cf - . | xz -T0 -6 >"$work/p/ort.tar.xz"
# The service's own dependencies at their pins, less onnxruntime (the GPU build replaces it) and numpy.
mapfile -t deps < <(python3 -c '
import tomllib
for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if not d.startswith(("onnxruntime", "numpy")):
        print(d)')
python3 -m pip download -q "${plat[@]}" -d "$work/p/wheels" "${deps[@]}"
rm -f "$work"/p/wheels/numpy-*
cp "models/product-classifier/$VERSION/model.fp16.onnx" "$work/p/"
python3 - "$DATA" "$IMAGES" "$work/p/images-000.tar" <<'PY'
import sys, tarfile
from pathlib import Path
data, count, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with tarfile.open(out, "w") as dst:
    n = 0
    for tar in sorted(data.glob("images-*.tar")):
        with tarfile.open(tar) as src:
            for m in src:
                if n < count and m.isfile() and m.name.endswith(".jpg"):
                    dst.addfile(m, src.extractfile(m))
                    n += 1
print(f"{n} JPEGs")
PY
cp "$(command -v wrk)" "$(command -v hey)" "$work/p/bin/"
cp "$(ldd "$(command -v wrk)" | awk '/libluajit/ {print $3}')" "$work/p/lib/"
rm -rf .gpu && mkdir -p .gpu
tar -C "$work/p" -cf - . | split -b "${PART:-61m}" -d -a 1 - "$work/part"
n=0
for p in "$work"/part*; do mkdir -p ".gpu/c$n" && mv "$p" ".gpu/c$n/"; n=$((n + 1)); done
du -sh .gpu/c*
echo "Parts ready: .gpu/c0 .. .gpu/c$((n - 1))"

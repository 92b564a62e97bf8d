#!/usr/bin/env bash
# The last call of a run on the lent GPU machine, in the repository root there. The calls before it each
# carried one part made by tools/gpu/pack.sh and copied it to /tmp/g; this one carries the last part.
# It unpacks the parts, installs onnxruntime-gpu and the web stack into /tmp/site, puts the FP16 model
# file, the catalogue JPEGs, wrk and hey in place, then writes into $OUT:
#   probe.txt, gpu-probe.json   python -m bench.gpu_probe (parity, placement, model alone, decode pools)
#   gpu.*                        python -m bench on CUDA: the service with decode threads (the default) and
#                                with decode processes (variant procN), profiles A, B and C50
# With an argument it runs one stage: `probe` (unpack, install, host facts, probe) or `bench` (the load
# benchmark only, in a later call on the same warm machine); SKIP_INSTALL=1 skips the unpacking.
set -uo pipefail
stage=${1:-all}
[ "$stage" = bench ] && SKIP_INSTALL=1
out=${OUT:?OUT must name the folder for the results}
version=${VERSION:-4}
procs=${PROCS:-$(($(nproc) - 2))}
py=${PYTHON:-python3}          # a rehearsal on a machine without a GPU sets PYTHON and PROVIDERS=cpu
providers=${PROVIDERS:-cuda}
if [ -z "${SKIP_INSTALL:-}" ]; then
  mkdir -p /tmp/g /tmp/p /tmp/site
  cp .gpu/c*/part* /tmp/g/ 2>/dev/null
  ls -la /tmp/g
  cat /tmp/g/part* | tar -x -C /tmp/p || { echo "parts incomplete: start again from c0"; exit 3; }
  tar -xJf /tmp/p/ort.tar.xz -C /tmp/site || exit 3
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/p/wheels/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/p/bin:$PATH LD_LIBRARY_PATH=/tmp/p/lib
cp /tmp/p/model.fp16.onnx "models/product-classifier/$version/"
mkdir -p ../shared/data/products && cp /tmp/p/images-000.tar ../shared/data/products/
[ "$stage" = bench ] || {
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "$(nproc) CPUs; $("$py" --version)"
  "$py" -c 'import numpy, PIL, onnxruntime as o; o.preload_dlls(); print("numpy", numpy.__version__, "pillow", PIL.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
  wrk --version | head -1
} 2>&1 | tee "$out/host.txt"
export VITRINE_MODEL_VERSION=$version
[ "$stage" = bench ] || timeout "${PROBE_TIMEOUT:-170}" "$py" -m bench.gpu_probe --out "$out" --seconds 1 --images 256 --batches 1,32,128,256 \
  2>&1 | tee "$out/probe.txt"
[ "$stage" = probe ] || timeout "${BENCH_TIMEOUT:-300}" "$py" -m bench --providers "$providers" --precision fp16 --peers none --threads 2 \
  --decode-threads 2 --profiles A,B,C50 --duration 8 --warmup 2 --ceiling-duration 3 --cold-starts 1 --retries 0 \
  --images 512 --variant "proc$procs:VITRINE_DECODE_PROCESSES=$procs" --results "$out" --name gpu 2>&1 | tail -60

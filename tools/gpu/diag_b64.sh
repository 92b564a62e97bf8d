#!/usr/bin/env bash
# Diagnosis of VITRINE_MAX_BATCH_SIZE=64 on CUDA (bench/results/gpu/v4/diag-b64.txt), on the GPU machine after
# the calls that carried .gpu/c0 .. c2 (tools/gpu/pack.sh), in the call that carries the last part.
set -u
if [ ! -d /tmp/site/onnxruntime ]; then
  mkdir -p /tmp/g /tmp/p /tmp/site; cp .gpu/c*/part* /tmp/g/ 2>/dev/null; ls /tmp/g
  cat /tmp/g/part* | tar -x -C /tmp/p || exit 3
  tar -xJf /tmp/p/ort.tar.xz -C /tmp/site || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/p/wheels/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VITRINE_MODEL_VERSION=4
cp /tmp/p/model.fp16.onnx models/product-classifier/4/
mkdir -p ../shared/data/products && cp /tmp/p/images-000.tar ../shared/data/products/
timeout 100 python3 tools/gpu/diag_b64.py 2>&1 | tail -40
VITRINE_MAX_BATCH_SIZE=64 VITRINE_DECODE_PROCESSES=14 VITRINE_PROVIDERS=cuda VITRINE_PRECISION=fp16 PYTHONFAULTHANDLER=1 \
  python3 -m app.cli serve --port 8077 >/tmp/serve.log 2>&1 &
pid=$!
for _ in $(seq 60); do curl -sf localhost:8077/health/ready >/dev/null && break; sleep 1; done
grep -m1 ready /tmp/serve.log
timeout 30 python3 tools/gpu/load_a.py http://127.0.0.1:8077/classify
kill -ABRT $pid; sleep 2
grep -v ' 200 OK' /tmp/serve.log | tail -60

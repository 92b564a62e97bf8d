"""BentoML peer: the same ONNX file behind BentoML's adaptive batching, the same preprocessing.

Clients post multipart `images` parts (as to Vitrine); BentoML's dispatcher merges the images of
concurrent requests into one call of `classify` (up to BENCH_MAX_BATCH_SIZE images, within
BENCH_MAX_LATENCY_MS), which decodes them with `app.preprocess.decode` on a small thread pool and runs
the model once. Runs in its own virtual environment (.venv-bento), with the repository on PYTHONPATH:

    BENCH_MODEL=models/product-classifier/4/model.int8.onnx PYTHONPATH=. \
        .venv-bento/bin/bentoml serve bench.peers.bento_service:Classifier --port 3000

BentoML reads the service's settings from the decorators when this module is imported, so the
environment is read here at import, unlike the service itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from app.preprocess import decode
from bench.peers.answers import PeerModel

MODEL = Path(os.environ.get("BENCH_MODEL", "models/product-classifier/4/model.int8.onnx"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
DECODE_THREADS = int(os.environ.get("BENCH_DECODE_THREADS", "2"))
MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "32"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "1000"))


# One worker like Vitrine; access logs off, as Vitrine runs without them (they cost a line per request).
@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Classifier:
    """One worker holding one onnxruntime session; `classify` is batchable across requests."""

    def __init__(self) -> None:
        self.model = PeerModel(MODEL, THREADS)
        self.pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="bento-decode")

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)  # type: ignore[untyped-decorator]
    def classify(self, images: list[Path]) -> list[dict[str, Any]]:
        """One result per image of the merged batch, without `index` (BentoML splits them back per request)."""
        spec = self.model.spec
        return self.model.answer(
            np.stack(list(self.pool.map(lambda p: decode(p.read_bytes(), spec), images))), indexed=False
        )

"""MLServer peer: the same ONNX file behind MLServer's adaptive batching, as a custom runtime.

MLServer has no ONNX runtime package, so this is the custom runtime its documentation describes (an
`MLModel` with `load` and `predict`). Clients speak MLServer's own protocol, the Open Inference (V2)
protocol: a JSON `POST /v2/models/classifier/infer` with one BYTES input `images` of shape [n], each
element a base64 JPEG (`"parameters": {"content_type": "base64"}`). MLServer's adaptive batcher merges up
to `max_batch_size` concurrent *requests* (not images) along that axis, waiting at most `max_batch_time`
seconds; `predict` decodes the merged images with `app.preprocess.decode` on a small thread pool, runs the
model once, and answers one BYTES output `results`: per image, the same JSON result as the other peers.

Runs in its own virtual environment (.venv-mlserver), with the repository on PYTHONPATH; `bench.servers`
writes the settings files and starts `mlserver start <folder>`. With MLServer's default of one parallel
worker, the server process parses requests and batches them, and `predict` runs in a worker process.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import Base64Codec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from app.preprocess import decode
from bench.peers.answers import PeerModel

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
DECODE_THREADS = int(os.environ.get("BENCH_DECODE_THREADS", "2"))


class Classifier(MLModel):  # type: ignore[misc]
    """One onnxruntime session; MLServer calls `predict` once per merged batch."""

    async def load(self) -> bool:
        self.model = PeerModel(Path(self.settings.parameters.uri), THREADS)
        self.pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="mlserver-decode")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images: list[bytes] = Base64Codec.decode_input(payload.inputs[0])
        spec = self.model.spec
        results = self.model.answer(
            np.stack(list(self.pool.map(lambda data: decode(data, spec), images))), indexed=False
        )
        answers = [json.dumps(result, separators=(",", ":")) for result in results]
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("results", answers)],
        )

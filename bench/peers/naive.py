"""Naive peer: FastAPI + onnxruntime, one model run per request, no batching across requests.

The way such a service is usually first written: a sync endpoint (run on Starlette's thread pool),
the same preprocessing (`app.preprocess.decode`), one `session.run` over the request's images, and a
JSON answer of the same shape as Vitrine's /classify. Configured by environment variables:
BENCH_MODEL (ONNX file), BENCH_THREADS (onnxruntime intra-op threads), BENCH_METADATA (model folder).

Run: uvicorn --factory bench.peers.naive:create_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from app.preprocess import decode
from app.schema import ModelMetadata
from bench.peers.answers import PeerModel


class NaiveModel(PeerModel):
    """The peer's model; `classify` answers one request's images."""

    def classify(self, blobs: list[bytes], top_k: int = 5) -> dict[str, Any]:
        """Decode, one model run, and the top label per category level plus the top-k article types."""
        return {"results": self.answer(np.stack([decode(b, self.spec) for b in blobs]), top_k)}


def create_app() -> FastAPI:
    """The naive app; the model loads in the lifespan."""
    model_path = Path(os.environ["BENCH_MODEL"])
    metadata = ModelMetadata.read(Path(os.environ.get("BENCH_METADATA", str(model_path.parent))))
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    state: dict[str, NaiveModel] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["model"] = NaiveModel(model_path, threads, metadata)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=64)
            blobs = [await p.read() for p in form.getlist("images") if isinstance(p, UploadFile)]
        else:
            blobs = [await request.body()]
        return JSONResponse(await run_in_threadpool(state["model"].classify, blobs))

    return app

"""Open Inference Protocol v2 over REST: model metadata, model readiness, infer (JSON and binary)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from app import oip
from app.core import Core
from app.errors import BodyTimeout, ImageError, NotReady
from app.routes.deps import core_of, settings_of, unless_disconnected
from app.settings import Settings


def served(core: Core, name: str, version: str | None) -> None:
    """ModelNotFound (404) unless `name` (and `version`, if given) is the model being served."""
    meta = core.metadata
    if name != meta.name:
        raise oip.ModelNotFound(f"unknown model {name!r}: this server serves {meta.name!r}")
    if version is not None and version != str(meta.version):
        raise oip.ModelNotFound(f"model {name!r} has no version {version!r} loaded (loaded: {meta.version})")


def embedding_width(core: Core) -> int | None:
    """Width of the model's embedding output, if it has one the graph declares."""
    name = core.metadata.embedding_output
    if not name:
        return None
    shape = next((o.shape for o in core.runtime.session.get_outputs() if o.name == name), None)
    return shape[-1] if shape and isinstance(shape[-1], int) else None


async def request_body(request: Request, timeout_s: float) -> bytes:
    """The whole body (BodyLimit caps its size while it streams), within the body timeout."""
    try:
        return await asyncio.wait_for(request.body(), timeout_s)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout_s:g}s") from None


async def infer(request: Request, name: str, version: str | None) -> Response:
    """Run a v2 infer request through the native API's core: same batcher, limits and metrics."""
    settings = settings_of(request)
    core = await core_of(request)
    served(core, name, version)
    body = await request_body(request, settings.body_timeout_s)
    names = oip.output_names(core.metadata, embedding_width(core))
    parsed = oip.parse_infer(body, request.headers.get(oip.HEADER), names, max_images=settings.max_images_per_request)
    rows = await unless_disconnected(request, core.infer(parsed.images, "v2_infer"))
    failed = [(i, row) for i, row in enumerate(rows) if isinstance(row, ImageError)]
    if failed:
        raise oip.image_failure(failed)
    outputs = {h.key: h.output for h in core.metadata.heads}
    if core.metadata.embedding_output:
        outputs[oip.EMBEDDING] = core.metadata.embedding_output
    tensors = {
        wanted.name: np.stack([row[outputs[wanted.name]] for row in rows if not isinstance(row, ImageError)])
        for wanted in parsed.outputs
    }
    content, header = oip.infer_response(core.metadata, parsed, tensors)
    if header is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={oip.HEADER: str(header)})


def routes(settings: Settings) -> APIRouter:
    """Server metadata, model metadata and readiness, infer; versioned paths name the version in service."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    async def metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
        core: Core | None = request.app.state.core
        if core is None:
            raise NotReady("the model is not loaded yet", headers={"Retry-After": "1"})
        served(core, name, version)
        return oip.model_metadata(core.metadata, [core.metadata.version], embedding_width(core))

    async def ready(request: Request, name: str, version: str | None) -> dict[str, Any]:
        core = await core_of(request)
        served(core, name, version)
        return {"name": name, "ready": True}

    @router.get("/models/{name}", name="v2_model", summary="Model metadata (v2)")
    async def model(request: Request, name: str) -> dict[str, Any]:
        return await metadata(request, name, None)

    @router.get("/models/{name}/versions/{version}", name="v2_model", summary="Model version metadata (v2)")
    async def model_version(request: Request, name: str, version: str) -> dict[str, Any]:
        return await metadata(request, name, version)

    @router.get("/models/{name}/ready", name="v2_model_ready", summary="Model readiness (v2)")
    async def model_ready(request: Request, name: str) -> dict[str, Any]:
        return await ready(request, name, None)

    @router.get("/models/{name}/versions/{version}/ready", name="v2_model_ready", summary="Version readiness (v2)")
    async def version_ready(request: Request, name: str, version: str) -> dict[str, Any]:
        return await ready(request, name, version)

    @router.post("/models/{name}/infer", name="v2_infer", summary="Infer (v2): a BYTES tensor of encoded images")
    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post("/models/{name}/versions/{version}/infer", name="v2_infer", summary="Infer on a version (v2)")
    async def version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return router

"""Open Inference Protocol v2 over REST: model metadata, model readiness, infer (JSON and binary)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from app import oip
from app.core import Core
from app.errors import BodyTimeout, ImageError, NotReady
from app.registry import Registry
from app.routes.deps import core_of, settings_of, unless_disconnected
from app.settings import Settings


async def version_core(request: Request, name: str, version: str | None) -> Core:
    """The ready core answering `name` (and `version`: any loaded version; none: the one in service);
    ModelNotFound (404) for another model or a version not loaded, NotReady (503) while not ready."""
    core = await core_of(request)  # the one in service, ready
    registry: Registry = request.app.state.registry
    if name != registry.name:
        raise oip.ModelNotFound(f"unknown model {name!r}: this server serves {registry.name!r}")
    if version is None:
        return core
    number = oip.version_number(version)
    chosen = registry.cores.get(number) if number is not None else None
    if chosen is None:
        loaded = ", ".join(str(v) for v in sorted(registry.cores))
        raise oip.ModelNotFound(f"model {name!r} has no version {version!r} loaded (loaded: {loaded})")
    if not chosen.ready:
        raise NotReady(f"version {version} of {name!r} is not ready", headers={"Retry-After": "1"})
    return chosen


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
    core = await version_core(request, name, version)
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


class V2Error(BaseModel):
    """v2's error shape."""

    error: str


V2_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": text}
    for status, text in (
        (400, "A request that does not fit the model (tensor name, type, shape, data, outputs)"),
        (401, "No valid API key (only when VITRINE_API_KEYS is set)"),
        (404, "No such model, or no such version loaded"),
        (408, "The request body did not arrive within VITRINE_BODY_TIMEOUT_S"),
        (409, "A repository request that would leave no version in service"),
        (413, "Body or image too large"),
        (422, "An image that cannot be used (the first one is named)"),
        (500, "Internal error"),
        (503, "Not ready or overloaded (see Retry-After)"),
        (504, "Deadline exceeded"),
    )
}
BYTES_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "enum": [oip.INPUT]},
        "datatype": {"type": "string", "enum": ["BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
        "data": {"type": "array", "items": {"type": "string", "format": "byte"}},
        "parameters": {"type": "object"},
    },
}
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": BYTES_TENSOR, "minItems": 1, "maxItems": 1},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                        },
                    },
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def routes(settings: Settings) -> APIRouter:
    """Model metadata, readiness and infer; a versioned path names a loaded version, else the one in service."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], responses=V2_ERRORS)
    infer_body = {"requestBody": INFER_BODY}

    async def metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
        core = await version_core(request, name, version)
        registry: Registry = request.app.state.registry
        return oip.model_metadata(core.metadata, sorted(registry.cores), embedding_width(core))

    async def ready(request: Request, name: str, version: str | None) -> dict[str, Any]:
        await version_core(request, name, version)
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

    @router.post(
        "/models/{name}/infer",
        name="v2_infer",
        summary="Infer (v2): a BYTES tensor of encoded images",
        openapi_extra=infer_body,
    )
    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        name="v2_infer",
        summary="Infer on a version (v2)",
        openapi_extra=infer_body,
    )
    async def version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return router

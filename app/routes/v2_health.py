"""Open Inference Protocol v2: server metadata, liveness and readiness (the probes KServe points at)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app import __version__
from app.routes.deps import core_of
from app.routes.v2 import V2_ERRORS
from app.settings import Settings

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def routes(settings: Settings) -> APIRouter:
    """GET /v2, /v2/health/live and /v2/health/ready (503 with v2's error shape while not ready)."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], responses={503: V2_ERRORS[503]})

    @router.get("", name="v2_server", summary="Server metadata (v2)")
    async def server() -> dict[str, Any]:
        return {"name": "vitrine", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/health/live", name="v2_live", summary="Liveness (v2): the process answers")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", name="v2_ready", summary="Readiness (v2): model loaded, warmed up, batching")
    async def ready(request: Request) -> dict[str, bool]:
        await core_of(request)
        return {"ready": True}

    return router

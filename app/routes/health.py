"""/health/live and /health/ready: the probes of load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.responses import ERRORS
from app.routes.deps import core_of
from app.settings import Settings


def routes(settings: Settings) -> APIRouter:
    """Liveness (the process answers) and readiness (model loaded, warmed up, batcher running)."""
    router = APIRouter()

    @router.get("/health/live", name="live", summary="Liveness: the process answers")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/health/ready",
        name="ready",
        summary="Readiness: model loaded, warmed up, batcher running",
        responses={503: ERRORS[503]},
    )
    async def ready(request: Request) -> dict[str, Any]:
        core = await core_of(request)
        return {"status": "ready", "model": core.model_ref.model_dump(), "warmed_batch_sizes": core.warmed_batch_sizes}

    return router

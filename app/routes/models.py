"""/models: the model served, its heads and labels, how the service runs it, and the other loaded versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.core import Core
from app.errors import NotReady
from app.registry import Registry
from app.settings import Settings


def routes(settings: Settings) -> APIRouter:
    """The model description, answered once the model is loaded (before warm-up ends, too)."""
    router = APIRouter()

    @router.get("/models", name="models", summary="The model served: version, provider in use, input, heads and labels")
    async def models(request: Request) -> dict[str, Any]:
        """The version in service first (`in_service`: true, it answers /classify and /attributes), then any other
        loaded version (the v2 repository routes load them)."""
        core: Core | None = request.app.state.core
        registry: Registry | None = request.app.state.registry
        if core is None or registry is None:
            raise NotReady("the model is not loaded yet", headers={"Retry-After": "1"})
        others = [c for v, c in sorted(registry.cores.items()) if c is not core]
        return {
            "models": [
                {**core.describe(), "in_service": True},
                *({**c.describe(), "in_service": False} for c in others),
            ]
        }

    return router

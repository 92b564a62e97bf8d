"""/models: the model served, its heads and labels, and how the service runs it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.core import Core
from app.errors import NotReady
from app.settings import Settings


def routes(settings: Settings) -> APIRouter:
    """The model description, answered once the model is loaded (before warm-up ends, too)."""
    router = APIRouter()

    @router.get("/models", name="models", summary="The model served: version, provider in use, input, heads and labels")
    async def models(request: Request) -> dict[str, Any]:
        core: Core | None = request.app.state.core
        if core is None:
            raise NotReady("the model is not loaded yet", headers={"Retry-After": "1"})
        return {"models": [core.describe()]}

    return router

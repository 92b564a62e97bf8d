"""/metrics: the app's Prometheus registry in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app.settings import Settings


def routes(settings: Settings) -> APIRouter:
    """The scrape endpoint."""
    router = APIRouter()

    # The operation id it had before routes were named after their metrics label: the OpenAPI document (and
    # clients generated from it) stay as they were.
    @router.get(
        "/metrics",
        name="metrics",
        operation_id="prometheus_metrics_get",
        summary="Prometheus metrics",
        response_class=Response,
    )
    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router

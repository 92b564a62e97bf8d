"""The FastAPI app factory: thin routes over the `Recognizer` core, errors, metrics and lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.access import ApiKeys
from app.errors import ClientClosed, NotReady, VitrineError
from app.metrics import Metrics
from app.responses import ERRORS, AttributesResponse, ClassifyResponse, FastJSON, images_body
from app.runtime import Runtime
from app.service import Endpoint, Recognizer
from app.settings import Settings
from app.uploads import BodyLimit, read_images

log = logging.getLogger(__name__)

ENDPOINTS = {
    "/classify": "classify",
    "/attributes": "attributes",
    "/models": "models",
    "/metrics": "metrics",
    "/health/live": "live",
    "/health/ready": "ready",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> FastJSON:
    """The one error shape: {"error": {"code", "message"}}."""
    return FastJSON({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class RequestMetrics:
    """ASGI middleware counting requests and their duration per endpoint (route, not raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = ENDPOINTS.get(scope["path"], "other")
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the model loads (unless `runtime` is open already) and warms up in the lifespan, not at import."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recognizer = Recognizer(settings, metrics, runtime)  # ModelLoadError here stops the process
        await recognizer.start()
        app.state.recognizer = recognizer
        try:
            yield
        finally:
            log.info("shutting down: finishing queued work")
            await recognizer.stop()

    app = FastAPI(
        title="Vitrine",
        version=__version__,
        description="Product-image recognition: category (master, sub, article type) and attributes "
        "(colour, gender, season, usage) of catalogue photos, batched across requests.",
        lifespan=lifespan,
        default_response_class=FastJSON,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.recognizer = None
    # Outermost last: metrics see every answer, 401s included; the key check runs before any body is read.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    keys = settings.key_list()
    app.add_middleware(ApiKeys, keys=keys, protect_ops=settings.protect_ops_endpoints)
    if keys:
        open_paths = "the API docs" if settings.protect_ops_endpoints else "the API docs, health and metrics"
        log.info("API keys: %d configured; open without a key: %s", len(keys), open_paths)
    else:
        log.info("API keys: none configured, every endpoint is open")
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(VitrineError)
    async def vitrine_error(_: Request, exc: VitrineError) -> Response:
        if exc.status >= 500 and not isinstance(exc, NotReady):
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_parameter", problems)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), dict(exc.headers or {})
        )  # 405 carries Allow

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")

    async def recognizer_of(request: Request) -> Recognizer:
        recognizer: Recognizer | None = request.app.state.recognizer
        if recognizer is not None and recognizer.model_failing:
            await recognizer.check_model()  # has the model recovered?
        if recognizer is None or not recognizer.ready:
            raise NotReady("the model is not ready", headers={"Retry-After": "1"})
        return recognizer

    async def answer(request: Request, endpoint: Endpoint, top_k: int | None) -> dict[str, Any]:
        recognizer = await recognizer_of(request)
        recognizer.check_endpoint(endpoint)  # before reading a body that could not be answered
        blobs = await read_images(
            request,
            max_images=settings.max_images_per_request,
            max_bytes=settings.max_request_bytes,
            timeout_s=settings.body_timeout_s,
        )
        work = asyncio.ensure_future(recognizer.recognise(endpoint, blobs, top_k or settings.default_top_k))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            raise ClientClosed("the client closed the connection")
        finally:
            # On every way out, the client gone or this request cancelled (the server's shutdown grace is over):
            # queued images are dropped before they reach the model, and no task outlives its request.
            work.cancel()
            gone.cancel()

    body = images_body(settings.max_images_per_request)
    top_k_query = Query(None, ge=1, le=100, description="How many labels to list per head (default 5).")

    @app.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": body},
        summary="Category of each product photo",
    )
    async def classify(request: Request, top_k: int | None = top_k_query) -> Response:
        """Article type with its master and sub category, and the top-k article types, per image (for a model
        without an article-type head, its finest category level; 404 for one without category heads)."""
        return FastJSON(await answer(request, "classify", top_k))

    @app.post(
        "/attributes",
        response_model=AttributesResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": body},
        summary="Attributes of each product photo",
    )
    async def attributes(request: Request, top_k: int | None = top_k_query) -> Response:
        """Colour, gender, season, usage (every non-category head), each with its top-k, per image."""
        return FastJSON(await answer(request, "attributes", top_k))

    @app.get("/health/live", summary="Liveness: the process answers")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/health/ready", summary="Readiness: model loaded, warmed up, batcher running", responses={503: ERRORS[503]}
    )
    async def ready(request: Request) -> dict[str, Any]:
        recognizer = await recognizer_of(request)
        return {"status": "ready", "model": recognizer.model_block, "warmed_batch_sizes": recognizer.warmed_batch_sizes}

    @app.get("/models", summary="The model served: version, provider in use, input, heads and labels")
    async def models(request: Request) -> dict[str, Any]:
        recognizer: Recognizer | None = request.app.state.recognizer
        if recognizer is None:
            raise NotReady("the model is not loaded yet", headers={"Retry-After": "1"})
        return {"models": [recognizer.describe()]}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

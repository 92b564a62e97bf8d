"""The FastAPI app factory: the routes of `app.routes.TABLE` over the core, middleware, errors and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.access import ApiKeys
from app.core import Core
from app.handlers import add_error_handlers
from app.metrics import Metrics
from app.registry import Registry
from app.request_metrics import EndpointLabels, RequestMetrics
from app.routes import Built, build
from app.routes.deps import FastJSON
from app.runtime import Runtime
from app.settings import Settings
from app.uploads import BodyLimit

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Product-image recognition: category (master, sub, article type) and attributes "
    "(colour, gender, season, usage) of catalogue photos, batched across requests."
)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the model loads (unless `runtime` is open already) and warms up in the lifespan, not at import."""
    settings = settings or Settings()
    metrics = Metrics()
    app = FastAPI(
        title="Vitrine",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan(settings, metrics, runtime),
        default_response_class=FastJSON,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.core = None
    app.state.registry = None
    routes = build(settings)
    for router in routes.routers:
        app.include_router(router)
    add_middleware(app, settings, metrics, routes)
    add_error_handlers(app)
    return app


def lifespan(
    settings: Settings, metrics: Metrics, runtime: Runtime | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the core (load, warm up, start batching) before serving; finish queued work on shutdown."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        core = Core(settings, metrics, runtime)  # ModelLoadError here stops the process
        await core.start()
        # More versions can be loaded and put in service later (the v2 repository routes): the routes take
        # the core in service from app.state.core, which the registry moves.
        registry = Registry(settings, metrics, core, publish=lambda serving: setattr(app.state, "core", serving))
        serving = core.metadata.version
        try:  # a version that cannot load stops the process here, as the one in service would
            await registry.load([serving, *settings.extra_versions()], serve=serving)
        except BaseException:
            await registry.stop()
            raise
        app.state.registry = registry
        try:
            yield
        finally:
            log.info("shutting down: finishing queued work")
            await registry.stop()

    return running


def add_middleware(app: FastAPI, settings: Settings, metrics: Metrics, routes: Built) -> None:
    """The body limit, the API-key check and the request metrics, outermost last: metrics see every answer,
    401s included, and the key check runs before any body is read."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    keys = settings.key_list()
    app.add_middleware(ApiKeys, keys=keys, ops_paths=routes.ops_paths, protect_ops=settings.protect_ops_endpoints)
    if keys:
        open_paths = "the API docs" if settings.protect_ops_endpoints else "the API docs, health and metrics"
        log.info("API keys: %d configured; open without a key: %s", len(keys), open_paths)
    else:
        log.info("API keys: none configured, every endpoint is open")
    app.add_middleware(RequestMetrics, metrics=metrics, labels=EndpointLabels(routes.routes()))

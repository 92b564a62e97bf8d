"""The HTTP routes, registered from one table; each group of routes is a module of its own.

Adding an endpoint:

1. Write `app/routes/<group>.py` with `def routes(settings: Settings) -> APIRouter`. Give each route a `name`:
   it is the `endpoint` label of `vitrine_requests_total` and `vitrine_request_duration_seconds`, so keep it
   short and fixed (`classify`, `ready`). A route parses and validates, then calls the core: `core_of(request)`
   gives the ready core (or answers 503), `settings_of(request)` the settings, `images_of(request)` the
   request's images, `unless_disconnected(request, work)` drops the work when the client goes away, and
   `await core.infer(blobs, endpoint)` runs images through the model (every output per image, with the
   batching, deadline, queue limit and `vitrine_images_total` accounting of /classify).
2. Add one line to `TABLE` below (`ops=True` for operational endpoints that `VITRINE_PROTECT_OPS_ENDPOINTS`
   leaves open without an API key unless it is set).
3. Write `tests/app/routes/test_<group>.py` against the tiny model (`tests/tiny_model.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from fastapi import APIRouter
from starlette.routing import BaseRoute, Route

from app.routes import explain, health, metrics, models, predict, repository, v2, v2_health
from app.settings import Settings


class Group(NamedTuple):
    """One module's routes: its `routes(settings)` factory, and whether they are operational endpoints."""

    routes: Callable[[Settings], APIRouter]
    ops: bool = False


# In the order of the OpenAPI document.
TABLE: tuple[Group, ...] = (
    Group(predict.routes),
    Group(explain.routes),
    Group(health.routes, ops=True),
    Group(models.routes),
    Group(metrics.routes, ops=True),
    Group(v2_health.routes, ops=True),
    Group(v2.routes),
    Group(repository.routes),
)


class Built(NamedTuple):
    """The table's routers built for one app, with what the middleware needs to know of them."""

    routers: tuple[APIRouter, ...]
    ops_paths: frozenset[str]  # open without an API key unless VITRINE_PROTECT_OPS_ENDPOINTS is set

    def routes(self) -> list[Route]:
        """Every route of the table."""
        return [route for router in self.routers for route in _http_routes(router.routes)]


def build(settings: Settings, table: tuple[Group, ...] = TABLE) -> Built:
    """Build every group's router for these settings."""
    routers = []
    ops: set[str] = set()
    for group in table:
        router = group.routes(settings)
        routers.append(router)
        if group.ops:
            ops.update(route.path for route in _http_routes(router.routes))
    return Built(tuple(routers), frozenset(ops))


def _http_routes(routes: list[BaseRoute]) -> list[Route]:
    return [route for route in routes if isinstance(route, Route)]

"""ASGI middleware counting requests and their duration per endpoint (the route's name) and status."""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics

OTHER = "other"  # the label of every path no route of the table serves (404s, the API docs)


class EndpointLabels:
    """The `endpoint` label of a request path: the name of the route that serves it, else `other`.

    Decided from the path alone, before routing, so that answers the app never routes (a 401 of the API-key
    check, a 413 of the body limit) count under their endpoint too."""

    def __init__(self, routes: Iterable[Route]) -> None:
        routes = list(routes)
        self._static = {r.path: r.name for r in routes if not r.param_convertors}
        self._templated = [r for r in routes if r.param_convertors]

    def __call__(self, path: str) -> str:
        label = self._static.get(path)
        if label is not None:
            return label
        return next((r.name for r in self._templated if r.path_regex.match(path)), OTHER)


class RequestMetrics:
    """Count each request in `vitrine_requests_total` and time it in `vitrine_request_duration_seconds`."""

    def __init__(self, app: ASGIApp, metrics: Metrics, labels: EndpointLabels) -> None:
        self.app = app
        self.metrics = metrics
        self.labels = labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.labels(scope["path"])
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

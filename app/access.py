"""Optional API-key authentication as ASGI middleware, with constant-time key comparison."""

from __future__ import annotations

import hmac

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def presented_keys(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Every key the request presents, from `Authorization: Bearer <key>` and `X-API-Key: <key>` headers.

    All of them, not the first: a proxy may add its own bearer token before the client's X-API-Key."""
    keys = []
    for name, value in headers:
        if name == b"x-api-key":
            keys.append(value.strip())
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            keys.append(value[7:].strip())
    return keys


def key_is_valid(presented: list[bytes], keys: list[bytes]) -> bool:
    """Compare every presented key against every configured one without short-circuiting, so that timing
    reveals nothing."""
    valid = False
    for key in presented:
        for candidate in keys:
            valid |= hmac.compare_digest(key, candidate)
    return valid


class ApiKeys:
    """Refuse requests without a valid key (401) when keys are configured; the API docs are always open, the
    operational endpoints (`ops_paths`: health, metrics) unless `protect_ops`."""

    def __init__(self, app: ASGIApp, keys: list[bytes], *, ops_paths: frozenset[str], protect_ops: bool) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = PUBLIC_PATHS if protect_ops else PUBLIC_PATHS | ops_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if key_is_valid(presented_keys(scope["headers"]), self.keys):
            await self.app(scope, receive, send)
            return
        message = "a valid API key is required"
        v2 = scope["path"] == "/v2" or scope["path"].startswith("/v2/")  # the Open Inference Protocol's shape
        body = orjson.dumps({"error": message} if v2 else {"error": {"code": "unauthorized", "message": message}})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="vitrine"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

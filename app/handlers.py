"""Exception handlers: every error answers in the one JSON shape {"error": {"code", "message"}}, except under
/v2, where the Open Inference Protocol's clients expect {"error": "<message>"}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.errors import NotReady, VitrineError
from app.routes.deps import FastJSON

log = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, path: str = ""
) -> FastJSON:
    """The one error shape: {"error": {"code", "message"}}; v2's {"error": message} for a path under /v2."""
    body = {"error": message} if is_v2(path) else {"error": {"code": code, "message": message}}
    return FastJSON(body, status_code=status, headers=headers)


def is_v2(path: str) -> bool:
    """True for the Open Inference Protocol's paths."""
    return path == "/v2" or path.startswith("/v2/")


async def vitrine_error(request: Request, exc: Exception) -> Response:
    """A VitrineError's own status, code and message (and headers, such as Retry-After)."""
    assert isinstance(exc, VitrineError)
    if exc.status >= 500 and not isinstance(exc, NotReady):
        log.warning("%s: %s", exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.headers, path=request.url.path)


async def invalid_parameter(request: Request, exc: Exception) -> Response:
    """422 with every invalid query parameter and why."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error_response(422, "invalid_parameter", problems, path=request.url.path)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in the one shape; a 405 keeps its Allow header."""
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}), path=request.url.path)


async def internal_error(request: Request, exc: Exception) -> Response:
    """500 without the exception's text, which may name internal paths; the log has the traceback."""
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal error", path=request.url.path)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error in the one shape."""
    app.add_exception_handler(VitrineError, vitrine_error)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)

"""What every route needs: the core and settings of its app, the request's images, a race with disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.core import Core
from app.errors import ClientClosed, NotReady
from app.settings import Settings
from app.uploads import Blob, read_images

T = TypeVar("T")


class FastJSON(JSONResponse):
    """JSON via orjson (numpy arrays and pydantic models included), without a validation pass over the content."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_unset_left_out, option=orjson.OPT_SERIALIZE_NUMPY)


def _unset_left_out(value: Any) -> Any:
    """A pydantic model as the dict of the fields it was built with (answers are built with `model_construct`)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def core_of(request: Request) -> Core:
    """The app's core, ready to take work; NotReady (503, Retry-After) while it loads, warms up or fails.

    While the model is failing, each call (readiness probes pace them) first tries it once, so that readiness
    can come back: a replica out of its load balancer gets no requests to show that it recovered."""
    core: Core | None = request.app.state.core
    if core is not None and core.model_failing:
        await core.check_model()
    if core is None or not core.ready:
        raise NotReady("the model is not ready", headers={"Retry-After": "1"})
    return core


async def images_of(request: Request) -> list[Blob]:
    """The request's images (multipart, JSON base64 or one raw image) within the configured limits."""
    settings = settings_of(request)
    return await read_images(
        request,
        max_images=settings.max_images_per_request,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.body_timeout_s,
    )


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first (ClientClosed, 499), cancelling it then.

    Call it once the body has been read: the next message is then the disconnect. On every way out (the client
    gone, or this request cancelled because the server's shutdown grace is over) the work is cancelled, so
    queued images are dropped before they reach the model and no task outlives its request."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientClosed("the client closed the connection")
    finally:
        task.cancel()
        gone.cancel()


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

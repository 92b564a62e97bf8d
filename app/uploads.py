"""Turn a request body (multipart, JSON with base64, or a raw image) into a list of image bytes."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    ImageError,
    MalformedBody,
    NoImages,
    PayloadTooLarge,
    TooManyImages,
    UnsupportedMediaType,
)

FIELD = "images"
Blob = bytes | ImageError


async def read_images(request: Request, *, max_images: int, max_bytes: int) -> list[Blob]:
    """Image bytes in request order; invalid base64 items become per-item errors.

    The body limit is checked from Content-Length here and while streaming by `BodyLimit`.
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"the request body is {length} bytes, more than the limit of {max_bytes}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        blobs: list[Blob] = await _multipart(request, max_images)
    elif content_type in ("application/json", ""):
        blobs = _json(await request.body(), max_images)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        blobs = [await request.body()]
    else:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not accepted; send multipart/form-data, application/json or image/*"
        )
    if not blobs:
        raise NoImages(f"the request holds no images; send one or more '{FIELD}' parts or a JSON '{FIELD}' list")
    if len(blobs) > max_images:
        raise TooManyImages(f"{len(blobs)} images in one request; the limit is {max_images}")
    return blobs


async def _multipart(request: Request, max_images: int) -> list[Blob]:
    try:
        form = await request.form(max_files=max_images, max_fields=max_images + 16)
    except PayloadTooLarge:
        raise
    except Exception as exc:  # starlette reports multipart errors as HTTPException(400)
        detail = str(getattr(exc, "detail", exc))
        if "Too many files" in detail:
            raise TooManyImages(f"more than {max_images} images in one request") from exc
        raise MalformedBody(f"the multipart body could not be parsed: {detail}") from exc
    try:
        parts = form.getlist(FIELD)
        if not all(isinstance(part, UploadFile) for part in parts):
            # A part without a filename arrives as decoded text: its image bytes are already lost.
            raise MalformedBody(f"each '{FIELD}' part must be a file upload (Content-Disposition with a filename)")
        return [await part.read() for part in parts if isinstance(part, UploadFile)]
    finally:
        await form.close()


def _json(body: bytes, max_images: int) -> list[Blob]:
    if not body:
        raise NoImages(f'empty body; send a JSON object {{"{FIELD}": ["<base64>", ...]}}')
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get(FIELD), list)
        or not all(isinstance(item, str) for item in payload[FIELD])
    ):
        raise MalformedBody(f"expected a JSON object with a list '{FIELD}' of base64 strings")
    items = payload[FIELD]
    if len(items) > max_images:
        raise TooManyImages(f"{len(items)} images in one request; the limit is {max_images}")
    blobs: list[Blob] = []
    for item in items:
        if item.startswith("data:") and "," in item:
            item = item.split(",", 1)[1]  # data URLs: data:image/jpeg;base64,...
        try:
            blobs.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            blobs.append(ImageError("item is not valid base64"))
    return blobs


class BodyLimit:
    """ASGI middleware: count body bytes while they stream in and stop reading past `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
            return message

        await self.app(scope, limited, send)

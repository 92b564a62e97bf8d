"""Turn a request body (multipart, JSON with base64, or a raw image) into a list of image bytes."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    BodyTimeout,
    ClientClosed,
    ImageError,
    MalformedBody,
    NoImages,
    PayloadTooLarge,
    TooManyImages,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # defined for type checkers only

FIELD = "images"
MAX_OTHER_PARTS = 16  # multipart parts besides the images (ignored, but not without bound)
Blob = bytes | ImageError


async def read_images(request: Request, *, max_images: int, max_bytes: int, timeout_s: float) -> list[Blob]:
    """Image bytes in request order; invalid base64 items become per-item errors.

    The body limit is checked from Content-Length here and while streaming by `BodyLimit`; a body still
    arriving after `timeout_s` is BodyTimeout (408, connection closed).
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"the request body is {length} bytes, more than the limit of {max_bytes}")
    try:
        async with asyncio.timeout(timeout_s):
            blobs = await _read(request, max_images)
    except ClientDisconnect as exc:  # the client hung up mid-upload: not a server error
        raise ClientClosed("the client closed the connection while sending the body") from exc
    except TimeoutError as exc:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout_s:g}s", headers={"Connection": "close"}
        ) from exc
    if not blobs:
        raise NoImages(f"the request holds no images; send one or more '{FIELD}' parts or a JSON '{FIELD}' list")
    if len(blobs) > max_images:
        raise TooManyImages(f"{len(blobs)} images in one request; the limit is {max_images}")
    return blobs


async def _read(request: Request, max_images: int) -> list[Blob]:
    """The body's images, by its content type."""
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
    return blobs


async def _multipart(request: Request, max_images: int) -> list[Blob]:
    """Stream the body through python_multipart's parser, keeping only the bytes of the image parts.

    Cheaper than `request.form()` on the event loop: no UploadFile or spooled temporary file per part,
    no second read (docs/performance.md).
    """
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedBody("the multipart body could not be parsed: the Content-Type has no boundary")
    parts = _ImageParts(max_images)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise MalformedBody(f"the multipart body could not be parsed: {exc}") from exc
    if not parts.ended:  # python_multipart's finalize() does not check this itself
        raise MalformedBody("the multipart body ends before its closing boundary (a truncated upload?)")
    return list(parts.blobs)


class _ImageParts:
    """python_multipart callbacks collecting the file parts named `images`; other parts are skipped."""

    def __init__(self, max_images: int) -> None:
        self.max_images = max_images
        self.blobs: list[bytes] = []
        self._name = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self._current: bytearray | None = None  # None while inside a part that is skipped
        self._others = 0
        self.ended = False  # the closing boundary was read: nothing was cut off

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._current = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._name.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise MalformedBody('the multipart body could not be parsed: a part has no Content-Disposition "name"')
        if name != FIELD.encode():
            self._others += 1
            if self._others > MAX_OTHER_PARTS:
                raise MalformedBody(f"more than {MAX_OTHER_PARTS} multipart parts besides '{FIELD}'")
            return
        if b"filename" not in options:
            # A part without a filename is a text field, not an upload: refuse it rather than guess.
            raise MalformedBody(f"each '{FIELD}' part must be a file upload (Content-Disposition with a filename)")
        if len(self.blobs) >= self.max_images:
            raise TooManyImages(f"more than {self.max_images} images in one request")
        self._current = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current += data[start:end]

    def _part_end(self) -> None:
        if self._current is not None:
            self.blobs.append(bytes(self._current))
            self._current = None

    def _end(self) -> None:
        self.ended = True


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

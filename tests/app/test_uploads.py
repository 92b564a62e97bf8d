"""The streaming multipart reader: image parts kept byte for byte, other parts skipped, bad bodies refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from starlette.requests import Request

from app.errors import BodyTimeout, ClientClosed, MalformedBody, TooManyImages
from app.uploads import MAX_OTHER_PARTS, Blob, read_images

BOUNDARY = "vitrine-test-boundary"


def part(name: str, data: bytes, filename: str | None = "a.jpg") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/jpeg\r\n\r\n"
    return head.encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def read(payload: bytes, *, chunk: int = 7, max_images: int = 8, content_type: str | None = None) -> list[Blob]:
    """read_images over an ASGI request whose body arrives in small chunks (parts split across them)."""
    chunks = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    ctype = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}
    request = Request(scope, receive)
    return asyncio.run(read_images(request, max_images=max_images, max_bytes=2**20, timeout_s=10))


def test_image_parts_come_back_byte_for_byte_in_order(photos: list[bytes]) -> None:
    tricky = b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n"  # looks almost like a boundary
    payload = body(part("images", photos[0]), part("note", b"ignored", None), part("images", tricky + photos[1]))
    for chunk in (1, 7, 4096):
        assert read(payload, chunk=chunk) == [photos[0], tricky + photos[1]]


def test_empty_image_part_is_kept_as_an_empty_item(photos: list[bytes]) -> None:
    assert read(body(part("images", b""), part("images", photos[2]))) == [b"", photos[2]]


def test_text_images_part_is_refused() -> None:
    with pytest.raises(MalformedBody, match="file upload"):
        read(body(part("images", b"hello", None)))


def test_too_many_images_stops_the_parse(photos: list[bytes]) -> None:
    with pytest.raises(TooManyImages):
        read(body(*[part("images", photos[0])] * 3), max_images=2)


def test_other_parts_are_bounded() -> None:
    with pytest.raises(MalformedBody, match="besides"):
        read(body(*[part("x", b"1", None)] * (MAX_OTHER_PARTS + 1)))


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"--x\r\nbroken", None),
        (body(part("images", b"abc")), "multipart/form-data"),
        (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(), None),
    ],
    ids=["garbage", "no-boundary", "no-name"],
)
def test_malformed_bodies_are_refused(payload: bytes, content_type: str | None) -> None:
    with pytest.raises(MalformedBody):
        read(payload, content_type=content_type)


def test_a_body_cut_before_its_closing_boundary_is_refused_not_shortened(photos: list[bytes]) -> None:
    """A truncated upload must not be answered for the images that happened to arrive whole."""
    whole = body(part("images", photos[0]), part("images", photos[1]))
    assert read(whole) == [photos[0], photos[1]]
    no_closing = part("images", photos[0]) + part("images", photos[1])
    for cut in (no_closing, no_closing[: len(no_closing) - 100], part("images", photos[0])[:300], b""):
        with pytest.raises(MalformedBody, match="closing boundary"):
            read(cut)


def test_a_client_hanging_up_mid_upload_is_client_closed_not_a_server_error(photos: list[bytes]) -> None:
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    for ctype, first in (
        ("image/jpeg", photos[0]),
        ("application/json", b'{"images": ["'),
        (multipart, part("images", photos[0])),
    ):
        messages[:] = [{"type": "http.request", "body": first[:500], "more_body": True}, {"type": "http.disconnect"}]
        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}
        with pytest.raises(ClientClosed):
            asyncio.run(read_images(Request(scope, receive), max_images=8, max_bytes=2**20, timeout_s=10))


def stalling_after(first: bytes) -> Callable[[], Awaitable[dict[str, object]]]:
    """An ASGI receive that gives `first` as the start of the body, then nothing more."""
    sent = [{"type": "http.request", "body": first, "more_body": True}]

    async def receive() -> dict[str, object]:
        if sent:
            return sent.pop(0)
        await asyncio.sleep(30)  # the rest never comes
        return {"type": "http.disconnect"}

    return receive


def test_a_body_that_stops_arriving_is_a_body_timeout(photos: list[bytes]) -> None:
    """A client that sends part of its body and then nothing must not hold the request (and the bytes) forever."""
    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    for ctype, first in (
        ("image/jpeg", photos[0]),
        ("application/json", b'{"images": ["'),
        (multipart, part("images", photos[0])),
    ):
        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}
        request = Request(scope, stalling_after(first[:500]))

        async def read(request: Request = request) -> float:
            started = asyncio.get_running_loop().time()
            with pytest.raises(BodyTimeout) as caught:
                await asyncio.wait_for(read_images(request, max_images=8, max_bytes=2**20, timeout_s=0.2), 5)
            assert caught.value.headers == {"Connection": "close"}
            return asyncio.get_running_loop().time() - started

        assert asyncio.run(read()) < 2

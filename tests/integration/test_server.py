"""A real server on loopback: concurrent clients are batched together and the metrics move."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from app.settings import Settings
from tests.live import metric, running


@pytest.fixture
def server(tiny_settings: Settings) -> Iterator[str]:
    """The tiny model behind a real server, batching up to 16 images for at most 50 ms."""
    settings = tiny_settings.model_copy(
        update={"max_batch_size": 16, "max_batch_delay_ms": 50.0, "max_queue_size": 256}
    )
    with running(settings) as url:
        yield url


def test_48_concurrent_one_image_clients_are_batched(server: str, photos: list[bytes]) -> None:
    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:

            async def one(i: int) -> int:
                files = {"images": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")}
                response = await client.post("/classify", files=files)
                assert response.json()["results"][0]["status"] == "ok"
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(48)))

    before = httpx.get(f"{server}/metrics").text
    assert all(status == 200 for status in asyncio.run(run()))
    after = httpx.get(f"{server}/metrics").text
    runs = metric(after, "vitrine_batch_size_count") - metric(before, "vitrine_batch_size_count")
    images = metric(after, "vitrine_batch_size_sum") - metric(before, "vitrine_batch_size_sum")
    assert images == 48
    assert images / runs > 2, f"mean batch size {images / runs:.2f}"
    assert metric(after, 'vitrine_images_total{endpoint="classify",outcome="ok"}') >= 48
    assert metric(after, 'vitrine_requests_total{endpoint="classify",status="200"}') >= 48
    for name in (
        "vitrine_queue_wait_seconds_count",
        "vitrine_inference_duration_seconds_count",
        "vitrine_decode_duration_seconds_count",
        'vitrine_request_duration_seconds_count{endpoint="classify"}',
    ):
        assert metric(after, name) > 0, name
    assert re.search(r'^vitrine_model_info\{.*provider="cpu".*\} 1\.0$', after, re.MULTILINE)
    assert "process_resident_memory_bytes" in after
    assert re.search(r"^vitrine_queue_depth 0\.0$", after, re.MULTILINE)


def test_images_of_a_client_that_went_away_are_not_run(tiny_settings: Settings, photos: list[bytes]) -> None:
    settings = tiny_settings.model_copy(update={"max_batch_size": 64, "max_batch_delay_ms": 600.0})
    with running(settings) as url:
        files = [("images", (f"{i}.jpg", photos[i], "image/jpeg")) for i in range(3)]
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/classify", files=files, timeout=0.2)  # gives up, closing the connection
        time.sleep(1.0)  # past the batch delay: the images would have run by now
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, "vitrine_batch_size_sum") == 0
        assert metric(text, 'vitrine_requests_total{endpoint="classify",status="499"}') == 1


def test_a_chunked_body_over_the_limit_is_cut_off_while_streaming(tiny_settings: Settings) -> None:
    with running(tiny_settings) as url:

        def body() -> Iterator[bytes]:
            for _ in range(64):  # 64 x 64 KiB = 4 MiB, twice the 2 MB limit, with no Content-Length
                yield b"\xff" * 65536

        response = httpx.post(f"{url}/classify", content=body(), headers={"content-type": "image/jpeg"}, timeout=30)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


def test_an_upload_that_stalls_gets_408_and_its_connection_is_closed(
    tiny_settings: Settings, photos: list[bytes]
) -> None:
    settings = tiny_settings.model_copy(update={"body_timeout_s": 0.5})
    with running(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            head = (
                "POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(photos[0])}\r\n\r\n"
            )
            sock.sendall(head.encode() + photos[0][:100])  # then nothing more
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            waited = time.monotonic() - started
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:200]
        assert b"connection: close" in rest.lower()
        assert b'"body_timeout"' in rest
        assert 0.4 < waited < 4
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, 'vitrine_requests_total{endpoint="classify",status="408"}') == 1

"""The HTTP-free core that routes build on: every model output per image, with the /classify accounting."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import generate_latest

from app.core import Core
from app.errors import ImageError, NotReady
from app.metrics import Metrics
from app.settings import Settings
from tests.tiny_model import HEADS


def infer(settings: Settings, blobs: list[bytes | ImageError], endpoint: str) -> tuple[list[object], str]:
    """Start a core, run `blobs` through it under `endpoint`, stop it; the rows and the metrics text."""

    async def scenario() -> list[object]:
        core = Core(settings, Metrics())
        await core.start()
        try:
            return list(await core.infer(blobs, endpoint))
        finally:
            await core.stop()
            text.append(generate_latest(core.metrics.registry).decode())

    text: list[str] = []
    rows = asyncio.run(scenario())
    return rows, text[0]


@pytest.mark.parametrize("decode_on_model_threads", [True, False], ids=["model-threads", "decode-threads"])
def test_infer_gives_every_output_per_image_and_errors_in_place(
    tiny_settings: Settings, photos: list[bytes], decode_on_model_threads: bool
) -> None:
    settings = tiny_settings.model_copy(update={"decode_on_model_threads": decode_on_model_threads})
    blobs: list[bytes | ImageError] = [photos[0], b"plain text", ImageError("item is not valid base64"), photos[1]]
    rows, text = infer(settings, blobs, "search")
    assert [type(r).__name__ for r in rows] == ["dict", "UnsupportedFormat", "ImageError", "dict"]
    for row in (rows[0], rows[3]):
        assert isinstance(row, dict)
        assert set(row) == {h.output for h in HEADS} | {"embedding"}
        for head in HEADS:
            probs = row[head.output]
            assert probs.shape == (len(head.labels),) and abs(float(probs.sum()) - 1) < 1e-4
        assert row["embedding"].shape == (12,) and abs(float(np.linalg.norm(row["embedding"])) - 1) < 1e-4
    # Each image counts once, under the caller's endpoint label.
    assert 'vitrine_images_total{endpoint="search",outcome="ok"} 2.0' in text
    assert 'vitrine_images_total{endpoint="search",outcome="unsupported_format"} 1.0' in text
    assert 'vitrine_images_total{endpoint="search",outcome="invalid_image"} 1.0' in text
    assert 'endpoint="classify"' not in text


def test_a_core_not_started_refuses_work_and_counts_it(tiny_settings: Settings, photos: list[bytes]) -> None:
    async def scenario() -> str:
        core = Core(tiny_settings, Metrics())
        with pytest.raises(NotReady):
            await core.infer([photos[0], photos[1]], "embed")
        await core.stop()
        return generate_latest(core.metrics.registry).decode()

    assert 'vitrine_images_total{endpoint="embed",outcome="not_ready"} 2.0' in asyncio.run(scenario())

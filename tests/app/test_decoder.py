"""The decode seam: both decoders give the same pixels and errors; the layout picks one at start."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.decoder import ModelThreadDecoder, PoolDecoder, choose_decoder
from app.errors import ImageError
from app.main import create_app
from app.metrics import Metrics
from app.preprocess import decode
from app.schema import Preprocessing
from app.settings import Settings
from app.uploads import Blob

SPEC = Preprocessing(input_name="pixels", size=32)


def blobs(photos: list[bytes]) -> list[Blob]:
    return [photos[0], b"plain text", ImageError("item is not valid base64"), photos[1], photos[2][:200], photos[3]]


def summary(items: list[np.ndarray | ImageError]) -> list[str | bytes]:
    return [item.code if isinstance(item, ImageError) else item.tobytes() for item in items]


def test_on_the_model_threads_bytes_are_queued_and_decoded_where_the_batch_runs(
    tiny_settings: Settings, photos: list[bytes]
) -> None:
    metrics = Metrics()
    decoder = ModelThreadDecoder(SPEC, tiny_settings, metrics)
    given = blobs(photos)
    queued = asyncio.run(decoder.decode(given))
    assert queued == given and all(q is g for q, g in zip(queued, given, strict=True))  # nothing decoded yet
    good = [q for q in queued if isinstance(q, bytes)]
    pixels = decoder.pixels(good)
    assert summary(pixels) == [
        decode(photos[0], SPEC).tobytes(),
        "unsupported_format",
        decode(photos[1], SPEC).tobytes(),
        "invalid_image",
        decode(photos[3], SPEC).tobytes(),
    ]
    assert metrics.registry.get_sample_value("vitrine_decode_duration_seconds_count") == 5


def test_a_decode_pool_gives_the_same_pixels_and_errors_in_order(tiny_settings: Settings, photos: list[bytes]) -> None:
    async def decoded() -> list[np.ndarray | ImageError]:
        decoder = PoolDecoder(SPEC, tiny_settings, Metrics(), threads=3, processes=0)
        await decoder.start()
        try:
            items = await decoder.decode(blobs(photos))
        finally:
            await decoder.stop()
        assert decoder.pixels([i for i in items if not isinstance(i, ImageError)]) == [
            i for i in items if not isinstance(i, ImageError)
        ]
        return items

    on_model_threads = ModelThreadDecoder(SPEC, tiny_settings, Metrics()).pixels(blobs(photos))  # type: ignore[arg-type]
    assert summary(asyncio.run(decoded())) == summary(on_model_threads)


@pytest.mark.parametrize(
    ("update", "kind", "where"),
    [
        ({}, ModelThreadDecoder, "model threads"),
        ({"decode_on_model_threads": False, "decode_threads": 2}, PoolDecoder, "decode threads"),
    ],
)
def test_the_layout_picks_the_decoder(
    tiny_settings: Settings, update: dict[str, object], kind: type, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings.model_copy(update=update)
    with caplog.at_level(logging.WARNING, logger="app.decoder"):
        decoder = choose_decoder(settings.layout(cuda=False), SPEC, settings, Metrics())
    assert isinstance(decoder, kind) and decoder.where == where
    assert decoder.ahead is (kind is PoolDecoder)
    assert not caplog.records


def test_decode_threads_set_where_they_have_no_effect_are_warned_about(
    tiny_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """VITRINE_DECODE_THREADS set explicitly while images are decoded on the model threads: a start-up warning."""
    explicit = Settings(**tiny_settings.model_dump(exclude_unset=True), decode_threads=2)
    warned = []
    for settings in (
        explicit,  # the CPU default decodes on the model threads
        explicit.model_copy(update={"decode_on_model_threads": False}),
        tiny_settings,
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="app.decoder"), TestClient(create_app(settings)):
            pass
        warned.append(any("VITRINE_DECODE_THREADS=2 has no effect" in r.getMessage() for r in caplog.records))
    assert warned == [True, False, False]

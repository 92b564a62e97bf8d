"""One batch on a model thread: undecodable images get their error, the rest run once, rows in order."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import open_runtime
from app.decoder import ModelThreadDecoder
from app.errors import ImageError
from app.inference import Inference
from app.metrics import Metrics
from app.settings import Settings
from tests.tiny_model import HEADS


def test_bad_images_get_their_error_and_the_rest_run_as_one_batch(tiny_settings: Settings, photos: list[bytes]) -> None:
    runtime = open_runtime(tiny_settings)
    metrics = Metrics()
    decoder = ModelThreadDecoder(runtime.metadata.preprocessing, tiny_settings, metrics)
    runs: list[int] = []
    real_run = runtime.run

    def counted(pixels: np.ndarray) -> dict[str, np.ndarray]:
        runs.append(len(pixels))
        return real_run(pixels)

    runtime.run = counted  # type: ignore[method-assign]
    inference = Inference(runtime, decoder, metrics)
    rows = inference([photos[0], b"junk", photos[1], photos[2]])
    alone = inference([photos[1]])[0]
    assert [type(r).__name__ for r in rows] == ["dict", "UnsupportedFormat", "dict", "dict"]
    assert isinstance(rows[2], dict) and isinstance(alone, dict)
    assert set(rows[2]) == {h.output for h in HEADS} | {"embedding"}
    for name, value in alone.items():  # the row is the image's own, whatever its place in the batch
        assert np.allclose(rows[2][name], value, atol=1e-5), name
    only_bad = inference([b"junk", b""])
    assert all(isinstance(r, ImageError) for r in only_bad) and len(only_bad) == 2
    assert runs == [3, 1]  # the bad images never reached the model; a batch of only bad ones never ran
    assert metrics.registry.get_sample_value("vitrine_batch_size_count") == 2
    assert metrics.registry.get_sample_value("vitrine_batch_size_sum") == 4


def test_a_model_giving_too_few_rows_fails_the_batch(tiny_settings: Settings, photos: list[bytes]) -> None:
    runtime = open_runtime(tiny_settings)
    real_run = runtime.run
    runtime.run = lambda pixels: {k: v[:-1] for k, v in real_run(pixels).items()}  # type: ignore[method-assign]
    decoder = ModelThreadDecoder(runtime.metadata.preprocessing, tiny_settings, Metrics())
    with pytest.raises(RuntimeError, match="different number of rows"):
        Inference(runtime, decoder, Metrics())([photos[0], photos[1]])

"""One batch on a model thread: the decoder's pixels, one model run, a row per image."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from app.batcher import Row
from app.decoder import Decoder
from app.errors import ImageError
from app.metrics import Metrics
from app.runtime import Runtime


class Inference:
    """The batcher's `run_batch`: images that cannot be decoded get their ImageError, the rest run as one batch
    (`vitrine_batch_size`, `vitrine_inference_duration_seconds`)."""

    def __init__(
        self, runtime: Runtime, decoder: Decoder[Any], metrics: Metrics, *, keep_input: str | None = None
    ) -> None:
        """`keep_input`: a key under which each row also holds its image's model input (the palette reads it)."""
        self.runtime = runtime
        self.decoder = decoder
        self.metrics = metrics
        self.keep_input = keep_input

    def __call__(self, items: list[Any]) -> list[Row | ImageError]:
        """Each item's row (every model output), or its ImageError, in order."""
        pixels = self.decoder.pixels(items)
        good = [p for p in pixels if not isinstance(p, ImageError)]
        if not good:
            return [p for p in pixels if isinstance(p, ImageError)]  # a batch of bad images never runs
        self.metrics.batch_size.observe(len(good))
        started = time.monotonic()
        batch = np.stack(good)
        outputs = self.runtime.run(batch)
        if self.keep_input is not None:
            outputs[self.keep_input] = batch
        self.metrics.inference_duration.observe(time.monotonic() - started)
        if any(len(v) != len(good) for v in outputs.values()):
            raise RuntimeError("model returned a different number of rows than it was given")
        rows: list[Row | ImageError] = []
        row = 0
        for p in pixels:
            if isinstance(p, ImageError):
                rows.append(p)
            else:
                rows.append({name: value[row] for name, value in outputs.items()})
                row += 1
        return rows

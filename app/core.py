"""The HTTP-free core that routes build on: the model served, its decoder and batcher; `infer` runs images.

A request's images go decode (`app.decoder`) -> batch (`app.batcher`) -> run (`app.inference`) -> rows, which
the routes shape into answers (`app.predictions`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from app.batcher import Batcher, Row
from app.decoder import choose_decoder
from app.description import description, serving
from app.errors import DeadlineExceeded, ImageError, NotReady, VitrineError
from app.explain import Explainer, Explanation
from app.health import Health
from app.inference import Inference
from app.metrics import Metrics
from app.palette import Namer, Shades
from app.predictions import INPUT_KEY, Predictions
from app.repository import configured
from app.responses import ModelRef
from app.runtime import Runtime, wants_cuda
from app.schema import ModelMetadata
from app.settings import Settings
from app.translate import Labels, Translations
from app.uploads import Blob

__all__ = ["Core", "Row", "open_runtime"]  # Row: one image's outputs, by output name

log = logging.getLogger(__name__)


def open_runtime(settings: Settings) -> Runtime:
    """Open the configured model version as the settings say (raises ModelLoadError).

    Its intra-op threads are those of the layout for the provider it runs on: a CUDA build that falls back
    to the CPU (no usable GPU) takes the CPU layout's, and so serves in the CPU layout, not in the one made
    for a GPU."""
    return Runtime(
        configured(settings),
        precision=settings.precision,
        providers=settings.providers,
        # Concurrent runs share one session; the intra-op threads are shared out among them.
        intra_op_threads=settings.layout(cuda=wants_cuda(settings.providers)).intra_op_threads,
        cpu_intra_op_threads=settings.layout(cuda=False).intra_op_threads,
        spinning=False,  # spin-waiting threads bought no throughput here (docs/performance.md)
    )


class Core:
    """One model version served: its runtime, decoder, batcher and health; `infer` runs images through them."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime = runtime = runtime or open_runtime(settings)
        # Decided for the provider the model runs on, which is the CPU when a CUDA build finds no GPU.
        self.layout = layout = settings.layout(cuda=runtime.provider == "cuda")
        self.metadata = meta = runtime.metadata
        self.model_ref = ModelRef.model_construct(
            name=meta.name, version=meta.version, provider=runtime.provider, precision=runtime.precision
        )
        folder = runtime.path.parent  # the version folder: its palette and label tables sit beside the files
        self.labels = Labels(meta, Translations.read(folder))
        self.predictions = Predictions(meta, metrics, _namer(meta, Shades.read(folder)), self.labels)
        self.explainer = Explainer(meta)
        self._version_answered = metrics.version_images.labels(str(meta.version))
        self.decoder = choose_decoder(layout, meta.preprocessing, settings, metrics)
        self.batcher: Batcher[Any] = Batcher(
            Inference(runtime, self.decoder, metrics, keep_input=INPUT_KEY if self.predictions.namer else None),
            max_batch_size=layout.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            metrics=metrics,
            workers=layout.model_workers,
        )
        self.health = Health(runtime, self.batcher, metrics)
        self.answered_images = 0
        self._ok: dict[str, Any] = {}  # the `ok` child of vitrine_images_total per endpoint, looked up once
        metrics.model_info.info({k: str(v) for k, v in self.model_ref.model_dump().items()})

    @property
    def ready(self) -> bool:
        """True once warmed up, while the batcher accepts work and while the model answers."""
        return self.health.ready

    @property
    def model_failing(self) -> bool:
        """True after several failed model runs in a row (`check_model` tries it again)."""
        return self.health.model_failing

    @property
    def warmed_batch_sizes(self) -> list[int]:
        """The batch sizes run at warm-up (empty before)."""
        return self.health.warmed_batch_sizes

    async def check_model(self) -> None:
        """Try a failing model once, so that readiness can come back."""
        await self.health.check_model()

    async def start(self) -> None:
        """Start the decoder, warm up every batch shape the service will run (on each model thread on CUDA),
        then start batching."""
        started = time.monotonic()
        await self.decoder.start()
        warm_up = partial(self.runtime.warm_up, self.layout.max_batch_size)
        if self.runtime.provider == "cuda":  # the per-shape set-up holds only for the thread that did it
            self.health.warmed_batch_sizes = (await self.batcher.on_each_worker(warm_up))[0]
        else:  # CPU kernels keep no per-thread state: once is enough, however many model workers run
            self.health.warmed_batch_sizes = await asyncio.to_thread(warm_up)
        self.batcher.start()
        log.info(
            "ready in %.2fs (warmed batch sizes %s): %s",
            time.monotonic() - started,
            self.warmed_batch_sizes,
            ", ".join(f"{k} {v}" for k, v in self.serving().items()),
        )

    async def stop(self) -> None:
        """Finish queued and in-flight work, then release threads and processes."""
        await self.batcher.stop()
        await self.decoder.stop()
        log.info("stopped: answered %d images since start", self.answered_images)

    def serving(self) -> dict[str, Any]:
        """How this service runs the model."""
        return serving(self.layout, self.settings, self.decoder)

    def describe(self) -> dict[str, Any]:
        """What /models shows of the model served: with each head's labels in every language the model has, the
        heads it can explain, and whether it answers a palette."""
        described = description(self.metadata, self.model_ref, self.serving())
        languages = self.labels.languages[1:]
        translated = {language: self.labels.head_labels(language) for language in languages}
        for head in described["heads"]:
            head["translations"] = {language: translated[language][head["name"]] for language in languages}
        explain = self.metadata.explain
        described["languages"] = self.labels.languages
        described["explain"] = sorted(h.key for h in self.metadata.heads if explain and h.name in explain.outputs)
        described["palette"] = self.predictions.namer is not None
        return described

    def _run_outputs(self, names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        return list(self.runtime.session.run(names, {self.metadata.preprocessing.input_name: pixels}))

    async def explain(
        self, blobs: Sequence[Blob], head: str | None, label: str | None
    ) -> list[Explanation | ImageError]:
        """Explain a head's label (default each image's top label) per image, per-image errors in place.

        Explaining asks the graph for the head's class activation maps as well, so it runs beside the batcher (on
        a worker thread), not in its batches, which fetch only what /classify and /attributes answer. Images
        count in `vitrine_images_total` under `explain`."""
        chosen = self.explainer.head(head)
        index = self.explainer.label_index(chosen, label)
        if not self.ready:
            raise NotReady("the model is not ready")
        timeout = self.settings.request_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                items = await self.decoder.decode(list(blobs))
                good = [item for item in items if not isinstance(item, ImageError)]
                pixels, explained = await asyncio.to_thread(self._explain, good, chosen, index) if good else ([], [])
        except TimeoutError as exc:
            self.metrics.images.labels("explain", DeadlineExceeded.code).inc(len(blobs))
            raise DeadlineExceeded(f"the images were not explained within {timeout:g}s") from exc
        done = iter(explained)
        decoded = iter(pixels)
        results: list[Explanation | ImageError] = []
        for item in items:  # an image can fail at either stage: when received, or when decoded on this thread
            outcome = item if isinstance(item, ImageError) else next(decoded)
            results.append(outcome if isinstance(outcome, ImageError) else next(done))
        for result in results:
            self.metrics.images.labels("explain", result.code if isinstance(result, ImageError) else "ok").inc()
        return results

    def _explain(self, items: list[Any], head: Any, index: int | None) -> tuple[list[Any], list[Explanation]]:
        """On a worker thread: the items' pixels (or errors) and the explanations of those that decoded."""
        pixels = self.decoder.pixels(items)
        good = [p for p in pixels if not isinstance(p, ImageError)]
        explained = self.explainer.explain(self._run_outputs, np.stack(good), head, index) if good else []
        return pixels, explained

    async def infer(self, blobs: Sequence[Blob], endpoint: str) -> list[Row | ImageError]:
        """Every model output per image (each head's probabilities, the embedding), in order; an image that cannot
        be used gets its ImageError in its place. Raises when the request fails as a whole.

        Each image counts once in `vitrine_images_total` under `endpoint`: `ok`, its own error code, or, when the
        request fails as a whole, that error's code (`overloaded`, `deadline_exceeded`, `inference_failed`, ...;
        `cancelled` when the request was cancelled: its client went away, or the shutdown grace ran out)."""
        try:
            rows = await self._infer(list(blobs))
        except VitrineError as error:
            self.metrics.images.labels(endpoint, error.code).inc(len(blobs))
            raise
        except asyncio.CancelledError:
            self.metrics.images.labels(endpoint, "cancelled").inc(len(blobs))
            raise
        except Exception:
            self.metrics.images.labels(endpoint, "internal_error").inc(len(blobs))
            raise
        self._count(endpoint, rows)
        return rows

    def _count(self, endpoint: str, rows: list[Row | ImageError]) -> None:
        failed = Counter(row.code for row in rows if isinstance(row, ImageError))
        for outcome, count in failed.items():
            self.metrics.images.labels(endpoint, outcome).inc(count)
        answered = len(rows) - sum(failed.values())
        if answered:
            ok = self._ok.get(endpoint)
            if ok is None:
                ok = self._ok[endpoint] = self.metrics.images.labels(endpoint, "ok")
            ok.inc(answered)
            self._version_answered.inc(answered)
        self.answered_images += answered

    async def _infer(self, blobs: list[Blob]) -> list[Row | ImageError]:
        """Decode, batch, run: the rows in order, per-image errors in place; raises when the request fails as a
        whole. The deadline runs from here, so that it covers decoding before the batcher too; images waiting
        to be decoded there count against the queue limit as well as those waiting for a batch."""
        if not self.ready:
            raise NotReady("the model is not ready")
        timeout = self.settings.request_timeout_ms / 1000
        futures: list[asyncio.Future[Row]] = []
        try:
            async with asyncio.timeout(timeout):
                with self.batcher.holding(len(blobs) if self.decoder.ahead else 0):
                    items = await self.decoder.decode(blobs)
                good = [i for i, item in enumerate(items) if not isinstance(item, ImageError)]
                futures = self.batcher.submit([items[i] for i in good]) if good else []
                done = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            self.batcher.discard(futures)  # queued images of this request never reach the model
            raise DeadlineExceeded(f"the images were not processed within {timeout:g}s") from exc
        except asyncio.CancelledError:
            self.batcher.discard(futures)
            raise
        rows: list[Any] = list(items)  # the ImageErrors of decoding before the batcher stay in place
        for index, outcome in zip(good, done, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, ImageError):
                raise outcome  # a batch failed (InferenceFailed): the request fails as a whole (500)
            rows[index] = outcome  # a row, or the ImageError of an image decoded on its model thread
        return rows


def _namer(metadata: ModelMetadata, shades: Shades | None) -> Namer | None:
    """The palette's namer when the version folder has learned shades for one of its heads."""
    if shades is None:
        return None
    head = next((h for h in metadata.heads if h.name == shades.head), None)
    if head is None:
        log.warning("palette.json names the head %s, which the model lacks: no palette", shades.head)
        return None
    return Namer(shades, head.labels)

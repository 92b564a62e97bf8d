"""The HTTP-free core that routes build on: load a model, decode images off the loop, batch them, run them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

import numpy as np

from app.batcher import Batcher, Row
from app.errors import DeadlineExceeded, ImageError, NotReady, VitrineError
from app.metrics import Metrics, child_pids, resident_bytes
from app.predictions import Predictions
from app.preprocess import decode_many, decode_pool, started_worker
from app.repository import configured
from app.responses import ModelRef
from app.runtime import Runtime, wants_cuda
from app.settings import Settings
from app.uploads import Blob

__all__ = ["Core", "Row", "open_runtime"]  # Row: one image's outputs, by output name

log = logging.getLogger(__name__)

DECODE_START_S = 60.0  # a spawned process imports numpy and Pillow: a second or two, longer on a loaded host
FAILING_RUNS = 3  # model runs failed in a row after which the replica reports not ready
PROBE_TIMEOUT_S = 10.0  # a check of a failing model that takes longer leaves it failing


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
        spinning=settings.intra_op_spinning,
        memory_pattern=settings.memory_pattern,
    )


class Core:
    """Owns the runtime, the decode pool and the batcher for one model version; `infer` runs images through it."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or open_runtime(settings)
        # Decided for the provider the model runs on, which is the CPU when a CUDA build finds no GPU.
        self.layout = layout = settings.layout(cuda=self.runtime.provider == "cuda")
        if layout.decode_on_model_threads and "decode_threads" in settings.model_fields_set:
            log.warning(
                "VITRINE_DECODE_THREADS=%d has no effect: images are decoded on the model threads "
                "(VITRINE_DECODE_ON_MODEL_THREADS=false decodes them on their own threads before the batcher)",
                settings.decode_threads,
            )
        self.metrics = metrics
        self.metadata = self.runtime.metadata
        self.spec = self.metadata.preprocessing
        meta = self.metadata
        self.model_ref = ModelRef.model_construct(
            name=meta.name, version=meta.version, provider=self.runtime.provider, precision=self.runtime.precision
        )
        self.predictions = Predictions(meta, metrics)
        self._version_answered = metrics.version_images.labels(str(meta.version))
        self._answered: dict[str, Any] = {}  # the `ok` child of vitrine_images_total per endpoint, looked up once
        self._decode_chunk = partial(
            decode_many, spec=self.spec, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        # Decoding on the model threads: the batcher queues the bytes and each batch is decoded where it runs,
        # so there is no decode pool. Otherwise requests are decoded on the pool before the batcher.
        self._new_decode_pool = partial(decode_pool, settings.decode_threads, layout.decode_processes)
        self._decode_pool: Executor | None = None
        self._decode_workers = 0
        self._decode_pids: tuple[int, ...] = ()  # the decode processes and resource tracker, once started
        metrics.decode_processes_memory.set_function(lambda: resident_bytes(self._decode_pids))
        if not layout.decode_on_model_threads:
            self._decode_pool, self._decode_workers = self._new_decode_pool()
        self._decode_pool_lock = asyncio.Lock()
        self.batcher = Batcher(
            self.runtime.run,
            max_batch_size=layout.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            metrics=metrics,
            workers=layout.model_workers,
            prepare=self._decode_batch if layout.decode_on_model_threads else None,
        )
        self.warmed_batch_sizes: list[int] = []
        self.answered_images = 0
        self._checking = asyncio.Lock()
        metrics.model_failing.set_function(lambda: float(self.model_failing))
        metrics.model_info.info(
            {
                "name": meta.name,
                "version": str(meta.version),
                "provider": self.runtime.provider,
                "precision": self.runtime.precision,
            }
        )

    @property
    def ready(self) -> bool:
        """True once warmed up, while the batcher accepts work and while the model runs (not FAILING_RUNS
        failed runs in a row: see `check_model`)."""
        return bool(self.warmed_batch_sizes) and self.batcher.running and not self.model_failing

    @property
    def model_failing(self) -> bool:
        return self.batcher.failed_runs_in_a_row >= FAILING_RUNS

    async def check_model(self) -> None:
        """Called while the model is failing: try it once (one white image, on a model thread) so that readiness can
        come back: a replica out of its load balancer gets no requests to show that it recovered. One check at a
        time; readiness probes pace them."""
        if self._checking.locked():
            return
        async with self._checking:
            await self.batcher.probe(self.runtime.blank(1), PROBE_TIMEOUT_S)

    async def start(self) -> None:
        """Start the decode processes (if any), warm up every batch shape the service will run (on each model
        thread on CUDA), then start batching."""
        started = time.monotonic()
        if self.layout.decode_processes:
            await self._start_decode_processes()
        warm_up = partial(self.runtime.warm_up, self.layout.max_batch_size)
        if self.runtime.provider == "cuda":
            # the per-shape set-up held only for the thread that did it (bench/results/gpu): warm each model thread
            self.warmed_batch_sizes = (await self.batcher.on_each_worker(warm_up))[0]
        else:  # CPU kernels keep no per-thread state: once is enough, however many model workers run
            self.warmed_batch_sizes = await asyncio.to_thread(warm_up)
        self.batcher.start()
        log.info(
            "ready in %.2fs (warmed batch sizes %s): %s",
            time.monotonic() - started,
            self.warmed_batch_sizes,
            ", ".join(f"{k} {v}" for k, v in self.serving().items()),
        )

    async def _start_decode_processes(self) -> None:
        """Return once every decode process has started and run its initializer (its own process group).

        The pool spawns its processes on demand, and the first one up may take every task submitted at
        start. One still starting when the service is ready would die of a SIGTERM sent to the process
        group (Ctrl-C, some supervisors) and break the pool mid-drain.
        """
        loop = asyncio.get_running_loop()
        seen: set[int] = set()
        deadline = time.monotonic() + DECODE_START_S
        while len(seen) < self._decode_workers:
            tasks = (loop.run_in_executor(self._decode_pool, started_worker) for _ in range(self._decode_workers))
            try:  # a process that hangs while starting must fail the start, not hold it for ever
                seen.update(await asyncio.wait_for(asyncio.gather(*tasks), max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise RuntimeError(
                    f"{len(seen)} of {self._decode_workers} decode processes started within {DECODE_START_S:g}s"
                ) from None
        # multiprocessing's resource tracker, a child process of its own, lives as long as the service
        tracker = child_pids(os.getpid(), b"multiprocessing.resource_tracker")
        self._decode_pids = (*seen, *tracker)

    async def _decode(
        self, pool: Executor, blobs: list[bytes | ImageError]
    ) -> list[tuple[list[np.ndarray | ImageError], list[float]]]:
        """Decode on `pool`; one pool task per chunk, not per image: a 60x80 photo decodes in well under a
        millisecond, so per-image task hops would cost as much as the work."""
        loop = asyncio.get_running_loop()
        chunks = _chunks(blobs, self._decode_workers)
        return await asyncio.gather(*(loop.run_in_executor(pool, self._decode_chunk, c) for c in chunks))

    def _decode_batch(self, blobs: list[Any]) -> list[np.ndarray | ImageError]:
        """The batcher's `prepare` when decoding on the model threads: one batch's images, on its model thread."""
        decoded, seconds = self._decode_chunk(blobs)
        self._observe_decode_times(seconds)
        return decoded

    def _observe_decode_times(self, seconds: list[float]) -> None:
        for took in seconds:
            self.metrics.decode_duration.observe(took)

    async def _replace_decode_pool(self, broken: Executor) -> Executor:
        """Swap a broken process pool for a new one (once, however many requests found it broken); return the
        pool now in use."""
        async with self._decode_pool_lock:
            if self._decode_pool is not None and self._decode_pool is not broken:
                return self._decode_pool  # another request replaced it already
            log.warning("a decode process died: starting a new pool of %d", self._decode_workers)
            self._decode_pool = fresh = self._new_decode_pool()[0]
            broken.shutdown(wait=False, cancel_futures=True)  # its manager thread terminates the survivors
            await self._start_decode_processes()
            return fresh

    async def stop(self) -> None:
        """Finish queued and in-flight work, then release threads."""
        await self.batcher.stop()
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True)
        log.info("stopped: answered %d images since start", self.answered_images)

    def describe(self) -> dict[str, Any]:
        """What `/models` shows: identity, provider in use, input, heads and labels, metrics, architecture (an
        ensemble's members), the memory vote, and how the service runs it."""
        meta = self.metadata
        return {
            **self.model_ref.model_dump(),
            "input": {"size": self.spec.size, "dtype": self.spec.dtype, "layout": self.spec.layout},
            "preprocessing": self.spec.model_dump(mode="json"),
            "heads": [
                {"name": h.name, "key": h.key, "role": h.role, "level": h.level, "labels": h.labels} for h in meta.heads
            ],
            "metrics": meta.metrics,
            "architecture": meta.architecture,
            "members": meta.members,
            "memory_vote": meta.memory_vote.model_dump() if meta.memory_vote else None,
            "serving": self.serving(),
        }

    def serving(self) -> dict[str, Any]:
        """How this service runs the model (`Settings.layout`, decided from the provider when not set)."""
        layout = self.layout
        if layout.decode_on_model_threads:
            decode = "model threads"
        else:
            decode = "decode processes" if layout.decode_processes else "decode threads"
        return {
            "model_workers": layout.model_workers,
            "intra_op_threads_per_worker": layout.intra_op_threads,
            "max_batch_size": layout.max_batch_size,
            "max_batch_delay_ms": self.settings.max_batch_delay_ms,
            "decode_on": decode,
            "decode_workers": self._decode_workers,
        }

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
        failed = Counter(row.code for row in rows if isinstance(row, ImageError))
        answered = len(rows) - sum(failed.values())
        for outcome, count in failed.items():
            self.metrics.images.labels(endpoint, outcome).inc(count)
        if answered:
            ok = self._answered.get(endpoint)
            if ok is None:
                ok = self._answered[endpoint] = self.metrics.images.labels(endpoint, "ok")
            ok.inc(answered)
            self._version_answered.inc(answered)
        self.answered_images += answered
        return rows

    async def _infer(self, blobs: list[Blob]) -> list[Row | ImageError]:
        """The rows in order, per-image errors in place; raises when the request fails as a whole.

        The deadline runs from here, so that it covers decoding before the batcher too; images waiting to be
        decoded count against the queue limit as well as those waiting for a batch."""
        if not self.ready:
            raise NotReady("the model is not ready")
        pool = self._decode_pool
        timeout = self.settings.request_timeout_ms / 1000
        futures: list[asyncio.Future[Row]] = []
        try:
            async with asyncio.timeout(timeout):
                decoded: list[Any] = blobs  # on the model threads: the bytes go to the batcher
                if pool is not None:
                    decoded = await self._decode_stage(pool, blobs)
                good = [i for i, d in enumerate(decoded) if not isinstance(d, ImageError)]
                futures = self.batcher.submit([decoded[i] for i in good]) if good else []
                done = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            self.batcher.discard(futures)  # queued images of this request never reach the model
            raise DeadlineExceeded(f"the images were not processed within {timeout:g}s") from exc
        except asyncio.CancelledError:
            self.batcher.discard(futures)
            raise
        rows: list[Row | ImageError] = list(decoded)
        for index, outcome in zip(good, done, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, ImageError):
                raise outcome  # a batch failed (InferenceFailed): the request fails as a whole (500)
            rows[index] = outcome  # a row, or the ImageError of an image decoded on its model thread
        return rows

    async def _decode_stage(self, pool: Executor, blobs: list[bytes | ImageError]) -> list[Any]:
        """Decode a request's images on the decode pool, holding their places in the batcher's queue meanwhile."""
        with self.batcher.holding(len(blobs)):
            try:
                parts = await self._decode(pool, blobs)
            except BrokenProcessPool:  # a decode process died (killed, out of memory): a new pool, then once more
                parts = await self._decode(await self._replace_decode_pool(pool), blobs)
        for _, seconds in parts:
            self._observe_decode_times(seconds)
        return [item for items, _ in parts for item in items]


def _chunks(items: list[Any], parts: int) -> list[list[Any]]:
    """Split into at most `parts` contiguous, nearly equal chunks (order kept)."""
    size = -(-len(items) // max(1, min(parts, len(items))))
    return [items[i : i + size] for i in range(0, len(items), size)]

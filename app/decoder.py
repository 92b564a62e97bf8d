"""Where images are decoded, chosen once at start: on the model threads, or on a pool before the batcher.

Either way a request's images go decode -> batch -> run: `Decoder.decode` runs before the batcher (on the event
loop's side) and gives what the batcher queues; `Decoder.pixels` runs on the model thread, just before the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import ABC, abstractmethod
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from app.errors import ImageError
from app.metrics import Metrics, child_pids, resident_bytes
from app.preprocess import decode_many, decode_pool, started_worker
from app.schema import Preprocessing
from app.settings import Layout, Settings
from app.uploads import Blob

log = logging.getLogger(__name__)

DECODE_START_S = 60.0  # a spawned process imports numpy and Pillow first: far longer on a loaded host
T = TypeVar("T")  # what the batcher queues: bytes to decode on the model thread, or decoded pixels
Decoded = tuple[list[np.ndarray | ImageError], list[float]]  # `decode_many`: pixels or errors, seconds each


class Decoder(ABC, Generic[T]):
    """Turns a request's image bytes into the model's input, in two halves around the batcher's queue."""

    where = ""  # what /models says: "model threads", "decode threads" or "decode processes"
    workers = 0  # decode threads or processes of its own
    ahead = False  # decodes before the batcher: a request's images count against its queue limit meanwhile

    def __init__(self, spec: Preprocessing, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self._chunk = partial(
            decode_many, spec=spec, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )

    async def start(self) -> None:
        """Be ready to decode before the service reports ready."""

    async def stop(self) -> None:
        """Release what it holds, once no more requests come."""

    @abstractmethod
    async def decode(self, blobs: list[Blob]) -> list[T | ImageError]:
        """Before the batcher: what to queue for each image, or its ImageError."""

    @abstractmethod
    def pixels(self, items: list[T]) -> list[np.ndarray | ImageError]:
        """On the model thread: each queued item's pixels, or its ImageError."""

    def _observe(self, seconds: list[float]) -> None:
        for took in seconds:
            self.metrics.decode_duration.observe(took)


class ModelThreadDecoder(Decoder[bytes]):
    """Decode each batch on the model thread that runs it: no handoff between a decode and a model thread."""

    where = "model threads"

    async def decode(self, blobs: list[Blob]) -> list[bytes | ImageError]:
        return blobs

    def pixels(self, items: list[bytes]) -> list[np.ndarray | ImageError]:
        decoded, seconds = self._chunk(list(items))
        self._observe(seconds)
        return decoded


class PoolDecoder(Decoder[np.ndarray]):
    """Decode on a pool of threads or spawned processes before the batcher; a broken process pool is replaced.

    One pool task per chunk, not per image: per-image task hops would cost about as much as decoding a small
    photo."""

    ahead = True

    def __init__(
        self, spec: Preprocessing, settings: Settings, metrics: Metrics, *, threads: int, processes: int
    ) -> None:
        super().__init__(spec, settings, metrics)
        self.processes = processes
        self.where = "decode processes" if processes else "decode threads"
        self._new_pool = partial(decode_pool, threads, processes)
        self._pool, self.workers = self._new_pool()
        self._replacing = asyncio.Lock()
        self._pids: tuple[int, ...] = ()  # the decode processes and resource tracker, once started
        metrics.decode_processes_memory.set_function(lambda: resident_bytes(self._pids))

    async def start(self) -> None:
        if self.processes:
            await self._start_processes()

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)

    async def decode(self, blobs: list[Blob]) -> list[np.ndarray | ImageError]:
        pool = self._pool
        try:
            parts = await self._decode_on(pool, blobs)
        except BrokenProcessPool:  # a decode process died (killed, out of memory): a new pool, then once more
            parts = await self._decode_on(await self._replace(pool), blobs)
        for _, seconds in parts:
            self._observe(seconds)
        return [item for items, _ in parts for item in items]

    def pixels(self, items: list[np.ndarray]) -> list[np.ndarray | ImageError]:
        return list(items)

    async def _decode_on(self, pool: Executor, blobs: list[Blob]) -> list[Decoded]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(pool, self._chunk, c) for c in _chunks(blobs, self.workers)))

    async def _replace(self, broken: Executor) -> Executor:
        """Swap a broken process pool for a new one (once, however many requests found it broken); return the
        pool now in use."""
        async with self._replacing:
            if self._pool is not broken:
                return self._pool  # another request replaced it already
            log.warning("a decode process died: starting a new pool of %d", self.workers)
            self._pool = fresh = self._new_pool()[0]
            broken.shutdown(wait=False, cancel_futures=True)  # its manager thread terminates the survivors
            await self._start_processes()
            return fresh

    async def _start_processes(self) -> None:
        """Return once every decode process has started and run its initializer (its own process group).

        The pool spawns its processes on demand, and the first one up may take every task submitted at
        start. One still starting when the service is ready would die of a SIGTERM sent to the process
        group (Ctrl-C, some supervisors) and break the pool mid-drain.
        """
        loop = asyncio.get_running_loop()
        seen: set[int] = set()
        deadline = time.monotonic() + DECODE_START_S
        while len(seen) < self.workers:
            tasks = (loop.run_in_executor(self._pool, started_worker) for _ in range(self.workers))
            try:  # a process that hangs while starting must fail the start, not hold it for ever
                seen.update(await asyncio.wait_for(asyncio.gather(*tasks), max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise RuntimeError(
                    f"{len(seen)} of {self.workers} decode processes started within {DECODE_START_S:g}s"
                ) from None
        # multiprocessing's resource tracker, a child process of its own, lives as long as the service
        tracker = child_pids(os.getpid(), b"multiprocessing.resource_tracker")
        self._pids = (*seen, *tracker)


def choose_decoder(layout: Layout, spec: Preprocessing, settings: Settings, metrics: Metrics) -> Decoder[Any]:
    """The decoder of the layout: on the model threads, or on decode threads or processes."""
    if layout.decode_on_model_threads:
        if "decode_threads" in settings.model_fields_set:
            log.warning(
                "VITRINE_DECODE_THREADS=%d has no effect: images are decoded on the model threads "
                "(VITRINE_DECODE_ON_MODEL_THREADS=false decodes them on their own threads before the batcher)",
                settings.decode_threads,
            )
        return ModelThreadDecoder(spec, settings, metrics)
    return PoolDecoder(spec, settings, metrics, threads=settings.decode_threads, processes=layout.decode_processes)


def _chunks(items: list[Any], parts: int) -> list[list[Any]]:
    """Split into at most `parts` contiguous, nearly equal chunks (order kept)."""
    size = -(-len(items) // max(1, min(parts, len(items))))
    return [items[i : i + size] for i in range(0, len(items), size)]

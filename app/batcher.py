"""Dynamic batching: images from concurrent requests are pooled into runs on `workers` model threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from app.errors import InferenceFailed, NotReady, Overloaded
from app.metrics import Metrics

log = logging.getLogger(__name__)

Row = dict[str, np.ndarray]  # one image's model outputs, by output name
T = TypeVar("T")  # what the queue holds: one kind of item per batcher, the decoder's
R = TypeVar("R")  # what `on_each_worker` gives back
# Runs one batch of items on a model thread: a row per item in order, or that item's exception.
RunBatch = Callable[[list[T]], Sequence[Row | Exception]]


@dataclass
class _Item(Generic[T]):
    payload: T
    future: asyncio.Future[Row]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher(Generic[T]):
    """Queue of single images; batches formed by size or by the oldest image's delay budget.

    A batch runs when it holds `max_batch_size` images or when its oldest image has waited
    `max_delay_s`, on one of `workers` model threads so the event loop keeps serving; up to
    `workers` batches are in flight. While several workers are idle, the queue is shared out
    among them, so a lone request still uses every worker. Items whose request has gone away
    (cancelled future) are dropped before they reach the model. `run_batch` gives each item its row,
    or its own exception (an image that cannot be decoded) while the rest of the batch is answered.
    """

    def __init__(
        self,
        run_batch: RunBatch[T],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        metrics: Metrics,
        workers: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self._metrics = metrics
        self._queue: deque[_Item[T]] = deque()
        self._wakeup = asyncio.Event()
        self._workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vitrine-model")
        self._idle = workers
        self._worker_free = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failed_runs_in_a_row = 0  # model runs that raised since the last one that did not
        self._held = 0  # places held for images on their way to the queue (`holding`)

    @property
    def running(self) -> bool:
        """True while the worker runs and new work is accepted."""
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def depth(self) -> int:
        """Images waiting for a batch."""
        return len(self._queue)

    def start(self) -> None:
        """Start the worker task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._work(), name="vitrine-batcher")

    async def on_each_worker(self, fn: Callable[[], R]) -> list[R]:
        """Run `fn` once on every model thread (e.g. to warm up per-thread GPU state) and return the results.

        Each call waits at a barrier until all have started, so the pool has to give each one its own thread.
        """
        barrier = threading.Barrier(self._workers)

        def call() -> R:
            barrier.wait()
            return fn()

        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._executor, call) for _ in range(self._workers))))

    def submit(self, images: list[T]) -> list[asyncio.Future[Row]]:
        """Enqueue images (all or none) and return one future per image; Overloaded when the queue is full."""
        if not self.running:
            raise NotReady("the service is not accepting work")
        self._check_room(len(images))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for image in images:
            item = _Item(image, loop.create_future(), now)
            self._queue.append(item)
            futures.append(item.future)
        self._report_depth()
        self._wakeup.set()
        return futures

    def _check_room(self, images: int) -> None:
        """Overloaded unless `images` more fit beside those queued and those held for the queue (`holding`)."""
        if len(self._queue) + self._held + images > self.max_queue_size:
            raise Overloaded("the service is at capacity; retry shortly", headers={"Retry-After": "1"})

    @contextmanager
    def holding(self, images: int) -> Iterator[None]:
        """Places in the queue for images still on their way to it (being decoded before `submit`): they count
        against `max_queue_size` from here, so a full service answers 503 at once, not after decoding."""
        self._check_room(images)
        self._held += images
        self._report_depth()
        try:
            yield
        finally:
            self._held -= images
            self._report_depth()

    def _report_depth(self) -> None:
        """`vitrine_queue_depth`: the images `max_queue_size` counts, queued for a batch or held for decoding."""
        self._metrics.queue_depth.set(len(self._queue) + self._held)

    async def probe(self, run: Callable[[], object], timeout_s: float) -> bool:
        """Call `run` (a model run) on a model thread, outside the queue: does the model answer again? A success
        counts as a run that did not fail."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, run), timeout_s)
        except Exception:
            log.warning("readiness probe: the model run still fails", exc_info=True)
            return False
        self.failed_runs_in_a_row = 0
        return True

    def discard(self, futures: Sequence[asyncio.Future[Row]]) -> None:
        """Cancel a request's futures (deadline passed, client gone) and take its images out of the queue
        at once, so that they no longer hold queue capacity while every model thread is busy."""
        gone = set()
        for future in futures:
            future.cancel()
            gone.add(id(future))
        kept = [item for item in self._queue if id(item.future) not in gone]
        if len(kept) != len(self._queue):
            self._queue = deque(kept)
            self._report_depth()

    async def stop(self) -> None:
        """Stop taking work, finish what is queued and in flight, then release the model threads."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight)
        self._executor.shutdown(wait=True)

    def _take_batch(self, size: int) -> list[_Item[T]]:
        batch: list[_Item[T]] = []
        while self._queue and len(batch) < size:
            item = self._queue.popleft()
            if not item.future.done():  # cancelled: its client went away
                batch.append(item)
        self._report_depth()
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # A free model thread first: while all are busy the queue keeps filling the next batch.
            while self._idle == 0:
                self._worker_free.clear()
                await self._worker_free.wait()
            if not self._queue:
                continue  # emptied meanwhile (`discard`)
            # Then wait until the batch is full or the oldest image's delay budget is spent.
            deadline = self._queue[0].enqueued + self.max_delay_s
            while len(self._queue) < self.max_batch_size and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            # Start a batch on every idle worker: a short queue is shared out evenly, a long one goes
            # in full batches (the rest waits for the next free worker).
            while self._queue and self._idle:
                size = min(self.max_batch_size, -(-len(self._queue) // self._idle))
                batch = self._take_batch(size)
                if not batch:
                    break
                self._idle -= 1
                task = loop.create_task(self._run(batch))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: list[_Item[T]]) -> None:
        """Run one batch on a model thread and settle its items' futures."""
        started = time.monotonic()
        try:
            for item in batch:
                self._metrics.queue_wait.observe(started - item.enqueued)
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_batch, [i.payload for i in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception:  # one failed batch fails its items only; the workers keep serving
                self.failed_runs_in_a_row += 1
                log.exception("model run failed for a batch of %d images", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(InferenceFailed("the model failed on this batch"))
                return
            self.failed_runs_in_a_row = 0
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            self._idle += 1
            self._worker_free.set()

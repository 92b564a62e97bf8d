"""Dynamic batching: pooling across submitters, order, caps, failures, overload, cancellation, drain."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.batcher import Batcher, Row
from app.errors import InferenceFailed, NotReady, Overloaded
from app.metrics import Metrics


class Model:
    """A real function of its input (each image's id back), recording batch sizes."""

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[np.ndarray]) -> list[Row | Exception]:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            batch = np.stack(items)
            self.sizes.append(len(batch))
            time.sleep(self.delay_s)
            if self.fail_on is not None and (batch == self.fail_on).any():
                raise RuntimeError("boom")
            return [{"id": v} for v in batch.reshape(len(batch), -1)[:, 0].astype(np.int64)]
        finally:
            with self._lock:
                self.concurrent -= 1


def item(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


def make(model: Model, **kwargs: float) -> Batcher[np.ndarray]:
    options = {"max_batch_size": 8, "max_delay_s": 0.02, "max_queue_size": 64, **kwargs}
    return Batcher(model, metrics=Metrics(), **options)  # type: ignore[arg-type]


async def started(batcher: Batcher[np.ndarray]) -> Batcher[np.ndarray]:
    batcher.start()
    return batcher


def test_concurrent_single_images_are_pooled_and_answered_in_order() -> None:
    async def scenario() -> None:
        model = Model(delay_s=0.01)
        batcher = await started(make(model))

        async def client(value: int) -> int:
            (future,) = batcher.submit([item(value)])
            return int((await future)["id"])

        results = await asyncio.gather(*(client(v) for v in range(48)))
        await batcher.stop()
        assert results == list(range(48))
        assert np.mean(model.sizes) > 2, model.sizes
        assert max(model.sizes) <= 8
        assert model.max_concurrent == 1  # one batch in flight

    asyncio.run(scenario())


def test_a_large_request_is_spread_over_capped_batches() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = await started(make(model))
        futures = batcher.submit([item(v) for v in range(30)])
        values = [int((await f)["id"]) for f in futures]
        await batcher.stop()
        assert values == list(range(30))
        assert model.sizes == [8, 8, 8, 6]

    asyncio.run(scenario())


def test_a_lone_image_waits_at_most_about_the_delay() -> None:
    async def scenario() -> None:
        batcher = await started(make(Model(), max_delay_s=0.05))
        begin = time.monotonic()
        (future,) = batcher.submit([item(1)])
        await future
        waited = time.monotonic() - begin
        await batcher.stop()
        assert 0.04 <= waited < 1.0

    asyncio.run(scenario())


def test_a_failing_batch_fails_only_its_items() -> None:
    async def scenario() -> None:
        model = Model(fail_on=7)
        batcher = await started(make(model, max_batch_size=2, max_delay_s=0.0))
        bad = batcher.submit([item(7), item(8)])
        for future in bad:
            with pytest.raises(InferenceFailed):
                await future
        (good,) = batcher.submit([item(9)])
        assert int((await good)["id"]) == 9
        await batcher.stop()

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        batcher = await started(make(Model(delay_s=0.05), max_queue_size=4))
        batcher.submit([item(1)] * 4)
        with pytest.raises(Overloaded) as refused:
            batcher.submit([item(2)])
        assert refused.value.headers["Retry-After"]
        await batcher.stop()

    asyncio.run(scenario())


def test_cancelled_items_are_not_run() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = await started(make(model, max_delay_s=0.05))
        futures = batcher.submit([item(1), item(2), item(3)])
        futures[1].cancel()
        await asyncio.gather(futures[0], futures[2])
        await batcher.stop()
        assert sum(model.sizes) == 2

    asyncio.run(scenario())


def test_stop_finishes_queued_work_then_refuses_new_work() -> None:
    async def scenario() -> None:
        model = Model(delay_s=0.02)
        batcher = await started(make(model, max_batch_size=4))
        futures = batcher.submit([item(v) for v in range(12)])
        await batcher.stop()
        assert all(f.done() and not f.cancelled() for f in futures)
        assert [int(f.result()["id"]) for f in futures] == list(range(12))
        with pytest.raises(NotReady):
            batcher.submit([item(1)])

    asyncio.run(scenario())


def test_two_workers_keep_two_batches_in_flight_and_answers_in_order() -> None:
    async def scenario() -> None:
        model = Model(delay_s=0.02)
        batcher = await started(make(model, workers=2))

        async def client(value: int) -> int:
            (future,) = batcher.submit([item(value)])
            return int((await future)["id"])

        results = await asyncio.gather(*(client(v) for v in range(64)))
        await batcher.stop()
        assert results == list(range(64))
        assert model.max_concurrent == 2
        assert max(model.sizes) <= 8

    asyncio.run(scenario())


def test_a_lone_request_is_shared_among_idle_workers() -> None:
    async def scenario() -> None:
        model = Model(delay_s=0.05)
        batcher = await started(make(model, workers=2, max_batch_size=32))
        futures = batcher.submit([item(v) for v in range(16)])
        values = [int((await f)["id"]) for f in futures]
        await batcher.stop()
        assert values == list(range(16))
        assert sorted(model.sizes) == [8, 8]
        assert model.max_concurrent == 2

    asyncio.run(scenario())


def test_stop_waits_for_every_batch_in_flight() -> None:
    async def scenario() -> None:
        model = Model(delay_s=0.03)
        batcher = await started(make(model, workers=3, max_batch_size=2, max_delay_s=0.0))
        futures = batcher.submit([item(v) for v in range(9)])
        await asyncio.sleep(0.005)
        await batcher.stop()
        assert [int(f.result()["id"]) for f in futures] == list(range(9))

    asyncio.run(scenario())


def test_on_each_worker_runs_once_on_every_model_thread_and_batches_use_those_threads() -> None:
    """GPU warm-up is per thread: it must reach each model thread, and batches must run on no other."""

    async def scenario() -> None:
        seen: list[int] = []
        model = Model()
        batcher = make(model, workers=3)
        warmed = await batcher.on_each_worker(lambda: threading.get_ident())
        batcher.start()
        original = model.__call__

        def recording(items: list[np.ndarray]) -> list[Row | Exception]:
            seen.append(threading.get_ident())
            return original(items)

        batcher._run_batch = recording
        await asyncio.gather(*(f for v in range(40) for f in batcher.submit([item(v)])))
        await batcher.stop()
        assert len(set(warmed)) == 3
        assert set(seen) <= set(warmed)

    asyncio.run(scenario())


def test_items_failed_by_the_run_get_their_own_error_and_the_rest_their_rows_on_the_model_thread() -> None:
    """Decoding on the model threads: an image that cannot be decoded gets its own exception where the batch
    runs, and the others keep their rows in order."""

    async def scenario() -> None:
        model = Model()
        threads: set[str] = set()

        def run(payloads: list[int]) -> list[Row | Exception]:
            threads.add(threading.current_thread().name)
            good = [p for p in payloads if p not in (3, 5)]
            rows = iter(model([item(p) for p in good]) if good else [])
            return [ValueError(f"bad {p}") if p in (3, 5) else next(rows) for p in payloads]

        batcher = Batcher(run, max_batch_size=8, max_delay_s=0.02, max_queue_size=64, metrics=Metrics())
        batcher.start()
        futures = batcher.submit(list(range(8)))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        (lone_bad,) = batcher.submit([3])
        with pytest.raises(ValueError, match="bad 3"):
            await lone_bad
        await batcher.stop()
        answers = [str(o) if isinstance(o, BaseException) else int(o["id"]) for o in outcomes]
        assert answers == [0, 1, 2, "bad 3", 4, "bad 5", 6, 7]
        assert model.sizes == [6]
        assert threads and all(name.startswith("vitrine-model") for name in threads)
        assert batcher.failed_runs_in_a_row == 0  # bad images are not a failed run

    asyncio.run(scenario())


def test_a_run_that_answers_the_wrong_number_of_items_fails_its_batch() -> None:
    async def scenario() -> None:
        def one_short(items: list[np.ndarray]) -> list[Row | Exception]:
            return Model()(items)[1:]

        batcher = Batcher(one_short, max_batch_size=8, max_delay_s=0.02, max_queue_size=64, metrics=Metrics())
        batcher.start()
        outcomes = await asyncio.gather(*batcher.submit([item(1), item(2)]), return_exceptions=True)
        await batcher.stop()
        assert [type(o) for o in outcomes] == [InferenceFailed, InferenceFailed]
        assert batcher.failed_runs_in_a_row == 1

    asyncio.run(scenario())


def test_discarded_images_leave_the_queue_at_once_and_batching_goes_on() -> None:
    """`discard` (a request past its deadline, or gone) frees its queue places while the model thread is busy,
    even when it empties the queue the batcher is waiting on, and the images never run."""

    async def scenario() -> None:
        model = Model(delay_s=0.2)
        batcher = await started(make(model, max_batch_size=2, max_queue_size=4))
        running = batcher.submit([item(1), item(2)])  # taken into the one model thread's batch
        await asyncio.sleep(0.05)
        waiting = batcher.submit([item(3), item(4), item(5), item(6)])  # the queue is full
        await asyncio.sleep(0.01)  # the batcher now waits for the busy model thread
        with pytest.raises(Overloaded):
            batcher.submit([item(7)])
        batcher.discard(waiting[:2])
        assert batcher.depth == 2 and all(f.cancelled() for f in waiting[:2])
        later = batcher.submit([item(7), item(8)])
        batcher.discard([*waiting[2:], *later])  # everything queued: the batcher waits on an empty queue
        assert batcher.depth == 0
        assert [int(r["id"]) for r in await asyncio.gather(*running)] == [1, 2]
        await asyncio.sleep(0.05)  # the model thread is free again, with nothing left to batch
        (last,) = batcher.submit([item(9)])
        assert int((await asyncio.wait_for(last, 5))["id"]) == 9
        await batcher.stop()
        assert sorted(model.sizes) == [1, 2]  # the discarded images never ran

    asyncio.run(scenario())


def test_the_queue_depth_gauge_counts_images_held_for_decoding_like_the_queue_limit_does() -> None:
    """With decoding before the batcher, images being decoded count against max_queue_size: the gauge shows them."""

    async def scenario() -> None:
        metrics = Metrics()
        batcher = Batcher(Model(), metrics=metrics, max_batch_size=8, max_delay_s=10.0, max_queue_size=64)
        batcher.start()

        def depth() -> float | None:
            return metrics.registry.get_sample_value("vitrine_queue_depth")

        with batcher.holding(5):
            assert depth() == 5
            futures = batcher.submit([item(1), item(2)])
            assert depth() == 7
            with pytest.raises(Overloaded):
                batcher.submit([item(0)] * 58)  # 5 held + 2 queued + 58 > 64
        assert depth() == 2
        batcher.discard(futures)
        assert depth() == 0
        await batcher.stop()

    asyncio.run(scenario())

"""The ceilings a server is measured against: the model alone, and decode + preprocess + run without HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.errors import ImageError
from app.preprocess import decode, decode_many, decode_pool
from app.repository import ModelVersion
from app.runtime import Runtime, choose_providers, session_options


def _timed_loop(step: Callable[[], int], duration_s: float, warmup_steps: int = 3) -> tuple[float, int]:
    """Run `step` (which returns images done) for `duration_s` after a warm-up; (images/s, steps)."""
    for _ in range(warmup_steps):
        step()
    images = steps = 0
    started = time.perf_counter()
    while True:
        images += step()
        steps += 1
        elapsed = time.perf_counter() - started
        if elapsed >= duration_s:
            return images / elapsed, steps


def onnxruntime_alone(
    model: Path, pixels: np.ndarray, *, threads: int, duration_s: float, providers: str = "cpu", on_device: bool = False
) -> dict[str, object]:
    """The model file in a bare onnxruntime session, session options and providers as the service sets them.

    `on_device` (CUDA only): the batch is copied to the GPU once and the outputs stay there (IO binding),
    so the loop times the model alone, without the host-to-device copy that every real batch pays.
    """
    # The service's defaults: spinning off (Settings.intra_op_spinning).
    options = session_options(threads, spinning=False)
    session = ort.InferenceSession(str(model), options, providers=choose_providers(providers))
    name = session.get_inputs()[0].name
    step: Callable[[], int]
    if on_device:
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(pixels, "cuda", 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)

        def step() -> int:
            session.run_with_iobinding(binding)
            return len(pixels)

    else:

        def step() -> int:
            session.run(None, {name: pixels})
            return len(pixels)

    rate, steps = _timed_loop(step, duration_s)
    return {
        "images_per_s": round(rate, 1),
        "batch": len(pixels),
        "threads": threads,
        "runs": steps,
        "provider": session.get_providers()[0],
        "inputs_on_device": on_device,
        "model": str(model),
    }


def _chunks(items: list[bytes], parts: int) -> list[list[bytes]]:
    size = -(-len(items) // max(1, min(parts, len(items))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def in_process(
    version: ModelVersion,
    jpegs: list[bytes],
    *,
    precision: str,
    threads: int,
    decode_threads: int,
    batch: int,
    duration_s: float,
    pipelined: bool,
    spinning: bool = True,
    providers: str = "cpu",
    decode_processes: int = 0,
) -> dict[str, object]:
    """app.preprocess.decode on a pool of `decode_threads` (or `decode_processes`) and app.runtime.Runtime.run,
    no HTTP.

    Sequential: decode a batch (split over the decode threads), then run it (onnxruntime's threads).
    Pipelined: the decode threads decode the next batch while the model runs this one, as the
    service overlaps them. `spinning` is onnxruntime's intra-op spinning (the service's setting).
    """
    runtime = Runtime(version, precision=precision, providers=providers, intra_op_threads=threads, spinning=spinning)
    runtime.warm_up(batch)
    spec = runtime.metadata.preprocessing
    stream = cycle(jpegs)

    decode_chunk = partial(decode_many, spec=spec, max_bytes=1 << 30, max_pixels=40_000_000)
    pool, workers = decode_pool(decode_threads, decode_processes)
    with pool:
        Chunk = Future[tuple[list[np.ndarray | ImageError], list[float]]]

        def submit_batch() -> list[Chunk]:
            return [pool.submit(decode_chunk, c) for c in _chunks(list(islice(stream, batch)), workers)]

        def collect(futures: list[Chunk]) -> np.ndarray:
            items = [a for f in futures for a in f.result()[0]]
            errors = [a for a in items if isinstance(a, ImageError)]
            if errors:
                raise errors[0]  # the bench's catalogue JPEGs all decode
            return np.stack(items)  # type: ignore[arg-type]

        pending: list[list[Chunk]] = []

        def step_sequential() -> int:
            runtime.run(collect(submit_batch()))
            return batch

        def step_pipelined() -> int:
            if not pending:
                pending.append(submit_batch())
            pixels = collect(pending.pop())
            pending.append(submit_batch())
            runtime.run(pixels)
            return batch

        rate, steps = _timed_loop(step_pipelined if pipelined else step_sequential, duration_s)
        for futures in pending:
            collect(futures)
    return {
        "images_per_s": round(rate, 1),
        "batch": batch,
        "threads": threads,
        "decode_threads": decode_threads,
        "decode_processes": decode_processes,
        "pipelined": pipelined,
        "spinning": spinning,
        "runs": steps,
        "provider": runtime.provider,
        "precision": runtime.precision,
        "model": str(runtime.path),
    }


def in_process_workers(
    version: ModelVersion,
    jpegs: list[bytes],
    *,
    precision: str,
    workers: int,
    batch: int,
    duration_s: float,
    providers: str = "cpu",
) -> dict[str, object]:
    """`workers` threads that each decode a batch and run it on one shared single-threaded session.

    The shape of the naive peer, without HTTP: no handoff between decode and model threads, and no
    intra-op barriers for the decoding to stall. Often the fastest arrangement on few cores.
    """
    runtime = Runtime(version, precision=precision, providers=providers, intra_op_threads=1)
    runtime.warm_up(batch)
    spec = runtime.metadata.preprocessing
    counts = [0] * workers
    deadline = [0.0]  # set before the workers are released

    def work(index: int) -> None:
        stream = cycle(jpegs[index::workers])
        runtime.run(np.stack([decode(b, spec) for b in islice(stream, batch)]))  # warm-up
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            runtime.run(np.stack([decode(b, spec) for b in islice(stream, batch)]))
            counts[index] += batch

    barrier = threading.Barrier(workers + 1)
    pool = [threading.Thread(target=work, args=(i,), name=f"bench-worker-{i}") for i in range(workers)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + duration_s
    started = time.perf_counter()
    barrier.wait()
    for t in pool:
        t.join()
    rate = sum(counts) / (time.perf_counter() - started)
    return {
        "images_per_s": round(rate, 1),
        "batch": batch,
        "threads": 1,
        "workers": workers,
        "provider": runtime.provider,
        "precision": runtime.precision,
        "model": str(runtime.path),
    }

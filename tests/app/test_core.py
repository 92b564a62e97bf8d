"""The HTTP-free core: every model output per image with the /classify accounting; all layouts answer alike."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core import Core, open_runtime
from app.errors import ImageError, NotReady
from app.main import create_app
from app.metrics import Metrics, child_pids, resident_bytes
from app.settings import Settings
from tests.images import files
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
    classify = [line for line in text.splitlines() if line.startswith('vitrine_images_total{endpoint="classify"')]
    assert classify == ['vitrine_images_total{endpoint="classify",outcome="ok"} 0.0']  # exported from 0, untouched


def test_a_core_not_started_refuses_work_and_counts_it(tiny_settings: Settings, photos: list[bytes]) -> None:
    async def scenario() -> str:
        core = Core(tiny_settings, Metrics())
        with pytest.raises(NotReady):
            await core.infer([photos[0], photos[1]], "embed")
        await core.stop()
        return generate_latest(core.metrics.registry).decode()

    assert 'vitrine_images_total{endpoint="embed",outcome="not_ready"} 2.0' in asyncio.run(scenario())


def test_two_model_workers_give_the_same_answers(
    client: TestClient, tiny_settings: Settings, photos: list[bytes]
) -> None:
    one = client.post("/attributes", files=files(photos[:16])).json()["results"]
    settings = tiny_settings.model_copy(update={"model_workers": 2, "intra_op_threads": 2, "max_batch_size": 16})
    with TestClient(create_app(settings)) as two_workers:
        two = two_workers.post("/attributes", files=files(photos[:16])).json()["results"]
        batches = two_workers.get("/metrics").text
    for a, b in zip(one, two, strict=True):
        for key, head in a["attributes"].items():
            assert b["attributes"][key]["label"] == head["label"]
            assert abs(b["attributes"][key]["score"] - head["score"]) < 1e-4
    assert "vitrine_batch_size_count 2.0" in batches  # 16 images shared out between the two idle workers


def test_the_cpu_warms_up_once_however_many_model_workers_run(tiny_settings: Settings) -> None:
    """Only CUDA needs each model thread warmed (decision 0016); on the CPU extra workers add no start-up."""
    settings = tiny_settings.model_copy(update={"model_workers": 3})
    runtime = open_runtime(settings)
    calls: list[int] = []
    warm_up = runtime.warm_up

    def counted(max_batch_size: int) -> list[int]:
        calls.append(max_batch_size)
        return warm_up(max_batch_size)

    runtime.warm_up = counted  # type: ignore[method-assign]
    with TestClient(create_app(settings, runtime)) as client:
        ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["warmed_batch_sizes"] == [1, settings.max_batch_size]
    assert calls == [settings.max_batch_size]


def test_decoding_on_the_model_threads_or_before_the_batcher_gives_the_same_answers_and_errors(
    tiny_settings: Settings, photos: list[bytes]
) -> None:
    """Both layouts over HTTP: the same labels and scores, bad images answered in place, every decode timed,
    and the runtime's intra-op threads shared out among the model workers."""
    blobs = [*photos[:6], b"plain text", photos[0][:200], *photos[6:9], b"x" * (tiny_settings.max_image_bytes + 1)]
    answers = {}
    for on_model_threads in (True, False):
        settings = tiny_settings.model_copy(
            update={"decode_on_model_threads": on_model_threads, "intra_op_threads": 2, "model_workers": None}
        )
        with TestClient(create_app(settings)) as client:
            answers[on_model_threads] = client.post("/attributes", files=files(blobs)).json()["results"]
            metrics = client.get("/metrics").text
            client_serving = client.get("/models").json()["models"][0]["serving"]
        workers = 2 if on_model_threads else 1
        assert f"vitrine_batch_size_sum {len(blobs) - 3}.0" in metrics  # only decodable images reach the model
        assert f"vitrine_decode_duration_seconds_count {len(blobs)}.0" in metrics
        assert open_runtime(settings).session.get_session_options().intra_op_num_threads == 2 // workers
        assert client_serving == {
            "model_workers": workers,
            "intra_op_threads_per_worker": 2 // workers,
            "max_batch_size": 8,
            "max_batch_delay_ms": 20.0,
            "decode_on": "model threads" if on_model_threads else "decode threads",
            "decode_workers": 0 if on_model_threads else 2,
        }
    statuses = ["ok"] * 6 + ["error"] * 2 + ["ok"] * 3 + ["error"]
    for results in answers.values():
        assert [r["status"] for r in results] == statuses
        codes = [r["error"]["code"] for r in results if r["status"] == "error"]
        assert codes == ["unsupported_format", "invalid_image", "image_too_large"]
    for a, b in zip(answers[True], answers[False], strict=True):
        if a["status"] == "ok":
            for key, head in a["attributes"].items():
                assert b["attributes"][key]["label"] == head["label"]
                assert abs(b["attributes"][key]["score"] - head["score"]) < 1e-4


def test_decode_processes_give_the_same_answers_and_errors(
    client: TestClient, tiny_settings: Settings, photos: list[bytes]
) -> None:
    """VITRINE_DECODE_PROCESSES: images decoded in spawned processes, errors pickled back per item."""
    blobs = [*photos[:6], b"plain text", photos[0][:200], b"x" * (tiny_settings.max_image_bytes + 1)]
    threads = client.post("/attributes", files=files(blobs)).json()["results"]
    settings = tiny_settings.model_copy(update={"decode_processes": 2})
    with TestClient(create_app(settings)) as processes:
        answered = processes.post("/attributes", files=files(blobs)).json()["results"]
        metrics = processes.get("/metrics").text
        # What the gauge sums: the decode processes and multiprocessing's resource tracker (about 13 MB)
        decoders = resident_bytes(child_pids(os.getpid(), b"multiprocessing.spawn"))
        tracker = resident_bytes(child_pids(os.getpid(), b"multiprocessing.resource_tracker"))
    assert [r["status"] for r in answered] == [r["status"] for r in threads] == ["ok"] * 6 + ["error"] * 3
    assert [r["error"]["code"] for r in answered[6:]] == ["unsupported_format", "invalid_image", "image_too_large"]
    for a, b in zip(threads[:6], answered[:6], strict=True):
        assert {k: h["label"] for k, h in a["attributes"].items()} == {
            k: h["label"] for k, h in b["attributes"].items()
        }
    assert "vitrine_decode_duration_seconds_count 9.0" in metrics  # every item timed, in the parent process
    # Their memory is exported beside the service process's (which the memory alert adds to it).
    counted = sample(metrics, "vitrine_decode_processes_resident_memory_bytes")
    assert counted > 2 * 20e6  # Python, numpy and Pillow each
    assert tracker > 5e6 and abs(counted - decoders - tracker) < tracker / 2
    assert sample(client.get("/metrics").text, "vitrine_decode_processes_resident_memory_bytes") == 0.0
    assert 0 < sample(metrics, "vitrine_memory_limit_bytes") < float("inf")


def sample(exposition: str, name: str) -> float:
    """The value of an unlabelled metric in a /metrics text."""
    (family,) = (f for f in text_string_to_metric_families(exposition) if f.name == name)
    return float(family.samples[0].value)

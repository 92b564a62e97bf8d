"""The HTTP contract over a tiny real model: shapes, per-item and whole-request errors, health, models, docs."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.core import open_runtime
from app.main import create_app
from app.metrics import child_pids, resident_bytes
from app.responses import ClassifyResponse
from app.settings import PIPELINED_BATCH, WORKER_BATCH, Layout, Settings
from tests.images import encode, photo, png_bomb
from tests.tiny_model import HEADS, make_repository


def files(blobs: list[bytes], name: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(name, (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]


def test_classify_multipart_answers_each_image_in_order(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/classify", files=files(photos[:3]))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "tiny", "version": 1, "provider": "cpu", "precision": "fp32"}
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    labels = client.get("/models").json()["models"][0]["heads"]
    article = next(h["labels"] for h in labels if h["name"] == "articleType")
    for result in body["results"]:
        assert result["status"] == "ok"
        category = result["category"]
        assert category["label"] in article and 0 <= category["score"] <= 1
        assert {"label", "score"} <= category["master"].keys() and {"label", "score"} <= category["sub"].keys()
        assert len(result["top_k"]) == 5
        assert result["top_k"][0]["label"] == category["label"]
        scores = [t["score"] for t in result["top_k"]]
        assert scores == sorted(scores, reverse=True)


def test_same_image_gets_the_same_answer_in_any_batch(client: TestClient, photos: list[bytes]) -> None:
    alone = client.post("/classify", files=files([photos[4]])).json()["results"][0]
    together = client.post("/classify", files=files([photos[1], photos[4], photos[2]])).json()["results"][1]
    assert alone["category"]["label"] == together["category"]["label"]
    assert abs(alone["category"]["score"] - together["category"]["score"]) < 1e-5


def test_attributes_json_base64_with_top_k(client: TestClient, photos: list[bytes]) -> None:
    payload = {"images": [base64.b64encode(photos[0]).decode()]}
    response = client.post("/attributes?top_k=2", json=payload)
    assert response.status_code == 200
    attributes = response.json()["results"][0]["attributes"]
    assert set(attributes) == {"colour", "gender", "season", "usage"}
    for value in attributes.values():
        assert len(value["top_k"]) == 2 and value["label"] == value["top_k"][0]["label"]


def test_raw_image_body(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/classify", content=photos[0], headers={"content-type": "image/jpeg"})
    assert response.status_code == 200 and response.json()["results"][0]["status"] == "ok"


def test_formats_and_bad_images_are_answered_per_item(client: TestClient, photos: list[bytes]) -> None:
    blobs = [
        photos[0],
        b"plain text",
        encode(photo().convert("RGBA"), "PNG"),
        b"",
        encode(photo(), "WEBP"),
        png_bomb(),
        encode(photo(), "BMP"),
        photos[0][:200],
    ]
    results = client.post("/classify", files=files(blobs)).json()["results"]
    codes = [r["error"]["code"] if r["status"] == "error" else "ok" for r in results]
    assert codes == ["ok", "unsupported_format", "ok", "invalid_image", "ok", "image_too_large", "ok", "invalid_image"]


def test_invalid_base64_is_a_per_item_error(client: TestClient, photos: list[bytes]) -> None:
    payload = {"images": ["%%%not base64", base64.b64encode(photos[0]).decode()]}
    results = client.post("/attributes", json=payload).json()["results"]
    assert [r["status"] for r in results] == ["error", "ok"]
    assert results[0]["error"]["code"] == "invalid_image"
    not_strings = client.post("/attributes", json={"images": [base64.b64encode(photos[0]).decode(), 12]})
    assert not_strings.status_code == 400 and not_strings.json()["error"]["code"] == "malformed_body"


def test_whole_request_errors(client: TestClient, photos: list[bytes], tiny_settings: Settings) -> None:
    cases = [
        (client.post("/classify", json={"images": []}), 400, "no_images"),
        (client.post("/classify", files=files([photos[0]], name="other")), 400, "no_images"),
        (client.post("/classify", files=files([photos[0]] * 17)), 400, "too_many_images"),
        (client.post("/classify", json={"images": [""] * 17}), 400, "too_many_images"),
        (
            client.post("/classify", content=b"{broken", headers={"content-type": "application/json"}),
            400,
            "malformed_body",
        ),
        (client.post("/classify", json={"pictures": []}), 400, "malformed_body"),
        (
            client.post("/classify", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}),
            400,
            "malformed_body",
        ),
        (
            client.post("/classify", content=b"hello", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            client.post(
                "/classify",
                content=b"x" * (tiny_settings.max_request_bytes + 1),
                headers={"content-type": "image/jpeg"},
            ),
            413,
            "payload_too_large",
        ),
        (client.post("/classify?top_k=0", files=files([photos[0]])), 422, "invalid_parameter"),
        (client.get("/nowhere"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]


def test_oversized_single_image_is_a_per_item_error(client: TestClient, photos: list[bytes]) -> None:
    big = encode(photo().resize((1500, 2000)), "PNG")
    assert len(big) > 500_000
    results = client.post("/classify", files=files([big, photos[0]])).json()["results"]
    assert results[0]["error"]["code"] == "image_too_large" and results[1]["status"] == "ok"


def test_health_models_and_docs(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["warmed_batch_sizes"] == [1, 8]
    model = client.get("/models").json()["models"][0]
    assert model["provider"] == "cpu" and model["input"]["size"] == 32
    assert [h["key"] for h in model["heads"]] == ["article", "sub", "master", "colour", "gender", "season", "usage"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= body.keys()
    documented = schema["paths"]["/classify"]["post"]["responses"].keys()
    assert {"200", "400", "401", "404", "408", "413", "415", "422", "499", "500", "503", "504"} <= documented
    assert client.get("/docs").status_code == 200


def test_not_ready_before_start(tiny_settings: Settings) -> None:
    client = TestClient(create_app(tiny_settings))  # no `with`: the lifespan (load, warm-up) has not run
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert ready.headers["Retry-After"]
    assert client.post("/classify", content=b"x", headers={"content-type": "image/jpeg"}).status_code == 503


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
    """Only CUDA needs each model thread warmed (bench/results/gpu); on the CPU extra workers add no start-up."""
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


def test_the_layout_decodes_on_one_thread_model_workers_on_the_cpu_and_before_the_batcher_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.settings.available_cpus", lambda: 4)
    cpu = Settings(intra_op_threads=4).layout(cuda=False)
    assert cpu == Layout(decode_on_model_threads=True, model_workers=4, max_batch_size=WORKER_BATCH, intra_op_threads=1)
    assert Settings(intra_op_threads=4).layout(cuda=True) == Layout(False, 1, PIPELINED_BATCH, 4)
    assert Settings(intra_op_threads=4, decode_processes=2).layout(cuda=False) == Layout(
        False, 1, PIPELINED_BATCH, 4, decode_processes=2
    )
    chosen = Settings(intra_op_threads=4, decode_on_model_threads=False, model_workers=2, max_batch_size=8)
    assert chosen.layout(cuda=False) == Layout(False, 2, 8, 2)
    on_cuda = Settings(intra_op_threads=6, decode_on_model_threads=True, model_workers=3).layout(cuda=True)
    assert on_cuda == Layout(True, 3, WORKER_BATCH, 2)
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings(decode_on_model_threads=True, decode_processes=2)


def test_on_cuda_a_many_core_host_decodes_in_processes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an H200's 16 cores, 14 decode processes served profile A 1.55x faster than threads (bench/results/gpu/v4)."""
    for cpus, processes in ((2, 0), (7, 0), (8, 6), (16, 14)):
        monkeypatch.setattr("app.settings.available_cpus", lambda cpus=cpus: cpus)
        assert Settings(intra_op_threads=2).layout(cuda=True).decode_processes == processes, cpus
        assert Settings(intra_op_threads=2).layout(cuda=False).decode_processes == 0  # the CPU keeps its layout
    assert Settings(decode_processes=0).layout(cuda=True).decode_processes == 0  # asked for threads
    assert Settings(decode_processes=3).layout(cuda=True).decode_processes == 3
    on_model_threads = Settings(decode_on_model_threads=True).layout(cuda=True)
    assert on_model_threads.decode_on_model_threads and on_model_threads.decode_processes == 0


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
        with caplog.at_level(logging.WARNING, logger="app.core"), TestClient(create_app(settings)):
            pass
        warned.append(any("VITRINE_DECODE_THREADS=2 has no effect" in r.getMessage() for r in caplog.records))
    assert warned == [True, False, False]


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


def test_each_answered_head_s_top1_score_is_observed(client: TestClient, photos: list[bytes]) -> None:
    """vitrine_prediction_score: one observation per head answered per image (bad images none), of the score
    the answer carries, so that its distribution drifting shows in Prometheus."""
    classified = client.post("/classify", files=files([*photos[:5], b"plain text"])).json()["results"]
    described = client.post("/attributes", files=files(photos[:3])).json()["results"]
    count, total = score_histogram(client.get("/metrics").text)
    assert count == {"article": 5, "sub": 5, "master": 5, "colour": 3, "gender": 3, "season": 3, "usage": 3}
    answered = {
        "article": [r["category"]["score"] for r in classified[:5]],
        "master": [r["category"]["master"]["score"] for r in classified[:5]],
        **{key: [r["attributes"][key]["score"] for r in described] for key in ("colour", "gender", "season", "usage")},
    }
    for head, scores in answered.items():
        assert total[head] == pytest.approx(sum(scores)), head


def sample(exposition: str, name: str) -> float:
    """The value of an unlabelled metric in a /metrics text."""
    (family,) = (f for f in text_string_to_metric_families(exposition) if f.name == name)
    return float(family.samples[0].value)


def score_histogram(exposition: str) -> tuple[dict[str, float], dict[str, float]]:
    """vitrine_prediction_score's observation count and sum per head in a /metrics text."""
    (family,) = (f for f in text_string_to_metric_families(exposition) if f.name == "vitrine_prediction_score")
    count = {s.labels["head"]: s.value for s in family.samples if s.name.endswith("_count")}
    total = {s.labels["head"]: s.value for s in family.samples if s.name.endswith("_sum")}
    return count, total


@pytest.mark.parametrize(
    ("levels", "label_from"),
    [(("article", "sub", "master"), "article"), (("sub", "master"), "sub"), (("article",), "article"), ((), None)],
    ids=["all-levels", "no-article", "article-only", "attributes-only"],
)
def test_classify_answers_as_its_schema_says_for_any_set_of_category_heads(
    tmp_path: Path, tiny_settings: Settings, levels: tuple[str, ...], label_from: str | None
) -> None:
    """Which columns become heads is configuration: /classify must keep its documented shape for any of them."""
    heads = [h for h in HEADS if h.level in levels or h.role == "attribute"]
    settings = tiny_settings.model_copy(update={"model_repository": make_repository(tmp_path / "m", heads=heads)})
    files = [("images", ("a.jpg", encode(photo(0), "JPEG"), "image/jpeg"))]
    with TestClient(create_app(settings)) as client:
        answer = client.post("/classify?top_k=2", files=files)
        assert client.post("/attributes", files=files).status_code == 200
        metrics = client.get("/metrics").text
    # Each head answered for the one photo is observed once (the finest level also fills its own nested entry).
    assert score_histogram(metrics)[0] == {h.key: 1.0 for h in heads}
    if label_from is None:
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_available"
        return
    assert answer.status_code == 200
    ClassifyResponse.model_validate(answer.json())  # the OpenAPI document's model
    result = answer.json()["results"][0]
    finest = next(h for h in heads if h.level == label_from)
    assert result["category"]["label"] in finest.labels and len(result["top_k"]) == 2
    assert {k for k in result["category"] if k in ("master", "sub")} == set(levels) & {"master", "sub"}

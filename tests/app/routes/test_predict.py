"""/classify and /attributes over a tiny real model: shapes, per-item and whole-request errors, scores."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.responses import ClassifyResponse
from app.settings import Settings
from tests.images import encode, files, photo, png_bomb
from tests.tiny_model import HEADS, make_repository


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

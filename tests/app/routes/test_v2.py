"""The Open Inference Protocol v2 routes beside the native API, over the tiny model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.live import metric


def infer_body(images: list[bytes], outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "q",
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "model_repository"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
    assert client.get("/v2/models/tiny/versions/1/ready").status_code == 200


def test_model_metadata_gives_the_labels_in_the_order_of_models(client: TestClient) -> None:
    described = client.get("/v2/models/tiny").json()
    heads = client.get("/models").json()["models"][0]["heads"]
    assert described["versions"] == ["1"]
    assert [o["name"] for o in described["outputs"]] == [*(h["key"] for h in heads), "embedding"]
    for output, head in zip(described["outputs"], heads, strict=False):
        assert output["parameters"]["labels"] == head["labels"]
        assert output["shape"] == [-1, len(head["labels"])]
    assert client.get("/v2/models/tiny/versions/1").json() == described


def test_unknown_models_and_versions_get_404_in_the_v2_error_shape(client: TestClient) -> None:
    # "³" passes str.isdigit() but not int(): it must be an unknown version, not a 500.
    for path in ("/v2/models/other", "/v2/models/tiny/versions/2", "/v2/models/tiny/versions/³/ready"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert isinstance(answer.json()["error"], str), answer.json()
    answer = client.post("/v2/models/other/infer", json=infer_body([b"x"]))
    assert answer.status_code == 404 and "unknown model 'other'" in answer.json()["error"]
    assert isinstance(client.get("/v2/nowhere").json()["error"], str)


def test_infer_answers_what_classify_answers(client: TestClient, photos: list[bytes]) -> None:
    answer = client.post("/v2/models/tiny/infer", json=infer_body(photos[:3], ["article", "colour"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "q")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["article", "colour"]
    article = np.array(outputs["article"]["data"], np.float32).reshape(outputs["article"]["shape"])
    assert article.shape == (3, 5)
    np.testing.assert_allclose(article.sum(axis=1), 1.0, rtol=1e-5)
    labels = client.get("/models").json()["models"][0]["heads"][0]["labels"]
    files = [("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos[:3])]
    native = client.post("/classify", files=files, params={"top_k": 5}).json()["results"]
    for row, result in zip(article, native, strict=True):
        for entry in result["top_k"]:
            assert row[labels.index(entry["label"])] == pytest.approx(entry["score"], abs=1e-6)


def test_bad_images_and_bad_tensors_fail_the_request_with_a_v2_error(client: TestClient, photos: list[bytes]) -> None:
    answer = client.post("/v2/models/tiny/infer", json=infer_body([photos[0], b"not an image"]))
    assert answer.status_code == 422
    assert answer.json() == {"error": "image 1: not a recognised image format (JPEG, PNG, WebP, BMP, GIF, TIFF)"}
    answer = client.post("/v2/models/tiny/infer", json=infer_body(photos[:1], ["price"]))
    assert answer.status_code == 400 and "unknown output 'price'" in answer.json()["error"]
    too_many = client.post("/v2/models/tiny/infer", json=infer_body(photos[:1] * 17))
    assert too_many.status_code == 400 and "limit of 16" in too_many.json()["error"]


def test_v2_requests_are_counted_like_native_ones(client: TestClient, photos: list[bytes]) -> None:
    client.post("/v2/models/tiny/infer", json=infer_body(photos[:2]))
    text = client.get("/metrics").text
    assert metric(text, 'vitrine_images_total{endpoint="v2_infer",outcome="ok"}') == 2
    assert metric(text, 'vitrine_requests_total{endpoint="v2_infer",status="200"}') == 1


@pytest.fixture
def keyed(tiny_settings: Settings) -> Iterator[TestClient]:
    settings = tiny_settings.model_copy(update={"api_keys": tiny_settings.api_keys.__class__("k1")})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_keys_guard_v2_inference_but_not_its_probes(keyed: TestClient, photos: list[bytes]) -> None:
    refused = keyed.post("/v2/models/tiny/infer", json=infer_body(photos[:1]))
    assert refused.status_code == 401 and refused.json() == {"error": "a valid API key is required"}
    assert keyed.get("/v2/models/tiny").status_code == 401
    allowed = keyed.post("/v2/models/tiny/infer", json=infer_body(photos[:1]), headers={"X-API-Key": "k1"})
    assert allowed.status_code == 200
    assert keyed.get("/v2/health/ready").status_code == 200

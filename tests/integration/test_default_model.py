"""The committed default model: loads as the service loads it, labels as in the catalogue, answers real photos."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.repository import resolve
from app.settings import DEFAULT_REPOSITORY, Settings
from tests.conftest import CATALOGUE
from tests.live import metric

NAME = "product-classifier"


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    settings = Settings(providers="cpu", max_batch_size=16)
    with TestClient(create_app(settings)) as client:
        yield client


def test_default_version_is_complete_and_small() -> None:
    version = resolve(DEFAULT_REPOSITORY, NAME)
    assert set(version.metadata.files) == {"fp32", "int8", "fp16"}
    for precision in ("fp32", "int8", "fp16"):
        assert version.file_for(precision).is_file(), precision
    for path in version.folder.iterdir():  # ONNX files, an ensemble's external data files, plots
        assert path.stat().st_size < 20 * 10**6, path
    assert (version.folder / "README.md").exists()
    for head in version.metadata.heads:
        assert (
            version.metadata.metrics["int8"][f"{head.name}.top1"]
            >= version.metadata.metrics["fp32"][f"{head.name}.top1"] - 0.01
        )


def test_labels_are_the_catalogue_names() -> None:
    meta = resolve(DEFAULT_REPOSITORY, NAME).metadata
    article = meta.head_by_level("article")
    assert article is not None and {"Tshirts", "Casual Shoes", "Watches"} <= set(article.labels)
    colour = next(h for h in meta.heads if h.key == "colour")
    assert "Navy Blue" in colour.labels
    assert {h.key for h in meta.attribute_heads} == {"colour", "gender", "season", "usage"}


def test_answers_real_catalogue_photos(default_client: TestClient) -> None:
    rows = list(csv.DictReader((CATALOGUE / "labels.csv").open(newline="")))
    files = [("images", (f"{r['id']}.jpg", (CATALOGUE / f"{r['id']}.jpg").read_bytes(), "image/jpeg")) for r in rows]
    body = default_client.post("/classify", files=files).json()
    assert body["model"]["name"] == NAME and body["model"]["provider"] == "cpu"
    predicted = [r["category"] for r in body["results"]]
    article = np.mean([p["label"] == r["articleType"] for p, r in zip(predicted, rows, strict=True)])
    master = np.mean([p["master"]["label"] == r["masterCategory"] for p, r in zip(predicted, rows, strict=True)])
    assert article >= 0.75, article
    assert master >= 0.9, master
    attributes = default_client.post("/attributes", files=files[:8]).json()["results"]
    genders = [a["attributes"]["gender"]["label"] for a in attributes]
    assert np.mean([g == r["gender"] for g, r in zip(genders, rows[:8], strict=True)]) >= 0.5


def batch_runs(client: TestClient) -> float:
    """Model runs so far, from /metrics."""
    return metric(client.get("/metrics").text, "vitrine_batch_size_count")


def test_a_100_image_request_is_answered_in_several_runs(default_client: TestClient, photos: list[bytes]) -> None:
    # The default limits take it (the serving issue's example); batches stay capped at 16 images.
    images = [photos[i % len(photos)] for i in range(100)]
    before = batch_runs(default_client)
    body = default_client.post(
        "/classify", files=[("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(images)]
    )
    assert body.status_code == 200
    results = body.json()["results"]
    assert [r["index"] for r in results] == list(range(100)) and {r["status"] for r in results} == {"ok"}
    assert [r["category"]["label"] for r in results[len(photos) :]] == [
        r["category"]["label"] for r in results[: 100 - len(photos)]
    ]
    assert batch_runs(default_client) - before >= 7  # 100 images at 16 a run
    too_many = [("images", ("a.jpg", photos[0], "image/jpeg"))] * 257
    assert default_client.post("/classify", files=too_many).json()["error"]["code"] == "too_many_images"


def test_fp32_and_int8_agree(photos: list[bytes]) -> None:
    answers = {}
    for precision in ("fp32", "int8"):
        with TestClient(create_app(Settings(providers="cpu", precision=precision))) as client:
            files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(photos[:24])]
            answers[precision] = [
                r["category"]["label"] for r in client.post("/classify", files=files).json()["results"]
            ]
    agreement = np.mean([a == b for a, b in zip(answers["fp32"], answers["int8"], strict=True)])
    assert agreement >= 0.9, agreement


def test_repository_is_the_checkout_models_folder() -> None:
    assert Path(__file__).resolve().parents[2] / "models" == DEFAULT_REPOSITORY


def test_the_ensemble_is_described_and_its_heads_answer_distributions(default_client: TestClient) -> None:
    model = default_client.get("/models").json()["models"][0]
    assert model["architecture"] == "ensemble of efficientnet-lite0 + efficientnet-lite1"
    assert len(model["members"]) == 2 and model["memory_vote"] is None  # each member holds its own vote
    folder = resolve(DEFAULT_REPOSITORY, NAME).folder
    member_card = (folder / "member-1.md").read_text()
    assert "## Memory vote" in member_card and "gender (0.6), season (0.3)" in member_card
    photo = sorted(CATALOGUE.glob("*.jpg"))[0].read_bytes()
    answer = default_client.post("/attributes?top_k=10", files=[("images", ("a.jpg", photo, "image/jpeg"))]).json()
    for key in ("gender", "season"):
        scores = [t["score"] for t in answer["results"][0]["attributes"][key]["top_k"]]
        assert abs(sum(scores) - 1.0) < 1e-3 and scores == sorted(scores, reverse=True), (key, scores)

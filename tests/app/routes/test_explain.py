"""/explain over HTTP: heatmaps per image with per-item errors, the head and label chosen, labels in Chinese."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.app.routes.explainable import make_explainable_repository


@pytest.fixture
def explaining(tiny_settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    settings = tiny_settings.model_copy(update={"model_repository": make_explainable_repository(tmp_path / "models")})
    with TestClient(create_app(settings)) as client:
        yield client


def _files(photos: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]


def test_explains_each_photo_and_reports_bad_ones_in_place(explaining: TestClient, photos: list[bytes]) -> None:
    response = explaining.post("/explain", files=_files([photos[0], b"not an image", photos[1]]))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["ok", "error", "ok"]
    assert results[1]["error"]["code"] == "unsupported_format"
    explanation = results[0]["explanation"]
    assert explanation["head"] == "article" and 0 < explanation["score"] <= 1
    grid = explanation["grid"]
    assert len(grid) == 32 and {len(row) for row in grid} == {32}
    assert min(min(row) for row in grid) == 0.0 and max(max(row) for row in grid) == 1.0
    picture = Image.open(io.BytesIO(base64.b64decode(explanation["png"])))
    assert picture.format == "PNG" and picture.size == (32, 32)


def test_the_head_and_label_asked_for_and_chinese(explaining: TestClient, photos: list[bytes]) -> None:
    response = explaining.post("/explain?head=colour&label=Red&lang=zh", files=_files(photos[:2]))
    assert response.status_code == 200 and response.headers["content-language"] == "zh"
    for result in response.json()["results"]:
        assert (result["explanation"]["head"], result["explanation"]["label"]) == ("colour", "红色")


@pytest.mark.parametrize(
    ("query", "code"),
    [("head=pattern", "unknown_head"), ("label=Sarees", "unknown_label")],
)
def test_bad_queries_are_clear_errors(explaining: TestClient, photos: list[bytes], query: str, code: str) -> None:
    response = explaining.post(f"/explain?{query}", files=_files(photos[:1]))
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_a_model_without_maps_answers_404(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/explain", files=_files(photos[:1]))
    assert response.status_code == 404 and "vitrine export explainable" in response.json()["error"]["message"]


def test_explained_images_are_counted(explaining: TestClient, photos: list[bytes]) -> None:
    explaining.post("/explain", files=_files([photos[0], b"nope"]))
    metrics = explaining.get("/metrics").text
    assert 'vitrine_images_total{endpoint="explain",outcome="ok"} 1.0' in metrics
    assert 'vitrine_images_total{endpoint="explain",outcome="unsupported_format"} 1.0' in metrics

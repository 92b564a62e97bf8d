"""/attributes' palette and every answer's language over HTTP; /models lists both languages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.routes.explainable import ZH, make_explainable_repository
from tests.images import encode, photo


@pytest.fixture
def served(tiny_settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    settings = tiny_settings.model_copy(update={"model_repository": make_explainable_repository(tmp_path / "models")})
    with TestClient(create_app(settings)) as client:
        yield client


def _files(photos: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]


def test_attributes_carry_a_palette_of_the_products_own_colours(served: TestClient, photos: list[bytes]) -> None:
    results = served.post("/attributes", files=_files(photos[:4])).json()["results"]
    for result in results:
        swatches = result["attributes"]["palette"]
        assert 1 <= len(swatches) <= 5
        assert sum(s["share"] for s in swatches) == pytest.approx(1.0, abs=0.01)
        assert all(s["name"] in ZH["baseColour"] and s["hex"].startswith("#") and len(s["hex"]) == 7 for s in swatches)


def test_a_white_image_has_an_empty_palette(served: TestClient) -> None:
    from PIL import Image

    white = encode(Image.new("RGB", (60, 80), (255, 255, 255)), "PNG")
    result = served.post("/attributes", files=_files([white])).json()["results"][0]
    assert result["attributes"]["palette"] == []


@pytest.mark.parametrize(("query", "headers"), [("?lang=zh", {}), ("", {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})])
def test_chinese_by_query_or_header(served: TestClient, query: str, headers: dict[str, str]) -> None:
    jpeg = encode(photo(0), "JPEG")
    english = served.post("/classify", files=_files([jpeg])).json()["results"][0]
    answer = served.post(f"/classify{query}", files=_files([jpeg]), headers=headers)
    assert answer.headers["content-language"] == "zh"
    chinese = answer.json()["results"][0]
    assert chinese["category"]["label"] == ZH["articleType"][english["category"]["label"]]
    assert chinese["category"]["master"]["label"] == ZH["masterCategory"][english["category"]["master"]["label"]]
    assert [t["label"] for t in chinese["top_k"]] == [ZH["articleType"][t["label"]] for t in english["top_k"]]
    attributes = served.post(f"/attributes{query}", files=_files([jpeg]), headers=headers).json()["results"][0]
    assert attributes["attributes"]["gender"]["label"] in ZH["gender"].values()
    assert all(s["name"] in ZH["baseColour"].values() for s in attributes["attributes"]["palette"])


def test_english_stays_the_default(served: TestClient, photos: list[bytes]) -> None:
    for query, headers in (("", {"Accept-Language": "de"}), ("?lang=xx", {"Accept-Language": "zh"}), ("", {})):
        response = served.post(f"/attributes{query}", files=_files(photos[:1]), headers=headers)
        assert response.headers["content-language"] == "en"
        assert response.json()["results"][0]["attributes"]["usage"]["label"] in ZH["usage"]


def test_models_lists_both_languages(served: TestClient) -> None:
    model = served.get("/models").json()["models"][0]
    assert model["languages"] == ["en", "zh"]
    colour = next(h for h in model["heads"] if h["key"] == "colour")
    assert colour["translations"]["zh"] == [ZH["baseColour"][label] for label in colour["labels"]]
    assert model["palette"] is True and "article" in model["explain"]

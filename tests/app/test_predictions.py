"""Answer shaping: rows become typed results whose JSON carries exactly the fields the answer has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from app.batcher import Row
from app.errors import ImageError, UnsupportedFormat
from app.metrics import Metrics
from app.predictions import Predictions
from app.responses import AttributesResult, ClassifyResult
from app.routes.deps import FastJSON
from app.schema import ModelMetadata
from tests.tiny_model import HEADS, make_repository


def peaked(width: int, at: int) -> np.ndarray:
    """Probabilities with their top at `at` (0.6) and the rest shared out."""
    probs = np.full(width, 0.4 / (width - 1), dtype=np.float32)
    probs[at] = 0.6
    return probs


def rows() -> list[Row | ImageError]:
    row = {h.output: peaked(len(h.labels), 1) for h in HEADS}
    return [row, UnsupportedFormat("not a recognised image format"), row]


def json_of(results: list[ClassifyResult] | list[AttributesResult]) -> list[dict[str, object]]:
    body: list[dict[str, object]] = orjson.loads(FastJSON({"results": results}).body)["results"]
    return body


def test_classify_results_carry_the_finest_category_its_levels_and_top_k(tmp_path: Path) -> None:
    meta = ModelMetadata.read(make_repository(tmp_path) / "tiny" / "1")
    results = Predictions(meta, Metrics()).classify(rows(), top_k=2)
    assert all(isinstance(r, ClassifyResult) for r in results)
    ok, error, _ = json_of(results)
    score = 0.6
    assert ok == {
        "index": 0,
        "status": "ok",
        "category": {
            "label": "Shirts",
            "score": score,
            "master": {"label": "Accessories", "score": score},
            "sub": {"label": "Shoes", "score": score},
        },
        "top_k": [{"label": "Shirts", "score": score}, {"label": "Tshirts", "score": 0.1}],
    }
    assert error == {
        "index": 1,
        "status": "error",
        "error": {"code": "unsupported_format", "message": "not a recognised image format"},
    }


def test_attributes_results_carry_every_attribute_head(tmp_path: Path) -> None:
    meta = ModelMetadata.read(make_repository(tmp_path) / "tiny" / "1")
    metrics = Metrics()
    results = Predictions(meta, metrics).attributes(rows(), top_k=1)
    ok, error, last = json_of(results)
    attributes = {h.key: h for h in HEADS if h.role == "attribute"}
    assert ok["attributes"] == {
        key: {"label": h.labels[1], "score": 0.6, "top_k": [{"label": h.labels[1], "score": 0.6}]}
        for key, h in attributes.items()
    }
    assert set(error) == {"index", "status", "error"} and last["index"] == 2
    for key in attributes:  # each answered image's top-1 score is observed once per head
        assert metrics.registry.get_sample_value("vitrine_prediction_score_count", {"head": key}) == 2

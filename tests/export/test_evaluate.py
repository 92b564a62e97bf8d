"""Tests for export.evaluate: metric values on hand-checked cases, and the files and plots it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.data import IGNORE, Catalogue
from export.evaluate import evaluate, summarise


def catalogue(labels: dict[str, list[int]], n_classes: dict[str, int], size: int = 8, seed: int = 0) -> Catalogue:
    """A catalogue of random little images with the given integer labels."""
    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(seed)
    return Catalogue(
        ids=[str(i) for i in range(n)],
        pixels=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
        labels={k: np.array(v, dtype=np.int64) for k, v in labels.items()},
        classes={k: [f"{k}-{c}" for c in range(n_classes[k])] for k in labels},
    )


def one_hot(y: list[int], n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[[max(v, 0) for v in y]]


def test_perfect_predictions_score_one_and_are_calibrated() -> None:
    y = [0, 1, 2, 3, 4, 5, 6, 0]
    data = catalogue({"articleType": y, "baseColour": [0, 1] * 4}, {"articleType": 7, "baseColour": 2})
    probs = {
        "articleType": one_hot(y, 7),
        "baseColour": one_hot([0, 1] * 4, 2),
        "embedding": np.ones((8, 4)),
    }
    metrics = summarise(probs, data)
    for head in ("articleType", "baseColour"):
        assert metrics[f"{head}.top1"] == 1.0
        assert metrics[f"{head}.macro_f1"] == 1.0
        assert metrics[f"{head}.ece"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["articleType.top5"] == 1.0
    assert "baseColour.top5" not in metrics
    assert not any(k.startswith("embedding") for k in metrics)


def test_known_mistakes_give_hand_computed_metrics() -> None:
    # true 0,1,2,0; predicted 0,1,1,1, every prediction made with confidence 0.8
    y = [0, 1, 2, 0]
    p = np.full((4, 3), 0.1)
    p[np.arange(4), [0, 1, 1, 1]] = 0.8
    metrics = summarise({"baseColour": p}, catalogue({"baseColour": y}, {"baseColour": 3}), top5_heads=())
    assert metrics["baseColour.top1"] == pytest.approx(0.5)
    assert metrics["baseColour.ece"] == pytest.approx(0.3)  # one bin: |accuracy 0.5 - confidence 0.8|
    # per class precision (1, 1/3, 0), recall (1/2, 1, 0), F1 (2/3, 1/2, 0)
    assert metrics["baseColour.macro_precision"] == pytest.approx(4 / 9)
    assert metrics["baseColour.macro_recall"] == pytest.approx(0.5)
    assert metrics["baseColour.macro_f1"] == pytest.approx(7 / 18)


def test_top5_counts_a_true_class_ranked_sixth_as_a_miss() -> None:
    ranking = np.array([0.3, 0.25, 0.2, 0.12, 0.08, 0.05])
    p = np.stack([np.append(ranking, 0.0), np.append(ranking, 0.0)])  # class 5 ranks sixth, class 0 first
    metrics = summarise({"articleType": p}, catalogue({"articleType": [5, 0]}, {"articleType": 7}))
    assert metrics["articleType.top1"] == pytest.approx(0.5)
    assert metrics["articleType.top5"] == pytest.approx(0.5)


def test_ignored_rows_do_not_count() -> None:
    y = [0, 1, IGNORE, IGNORE]
    p = one_hot([0, 1, 1, 0], 2) * 0.9 + 0.05  # the masked rows would be wrong for any label
    metrics = summarise({"gender": p}, catalogue({"gender": y}, {"gender": 2}))
    assert metrics["gender.top1"] == 1.0
    assert metrics["gender.macro_recall"] == 1.0
    assert metrics["gender.ece"] == pytest.approx(0.05)


def test_evaluate_writes_reports_and_readable_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    article = rng.integers(0, 12, n).tolist()
    colour = [*rng.integers(0, 4, n - 3).tolist(), IGNORE, IGNORE, IGNORE]
    data = catalogue({"articleType": article, "baseColour": colour}, {"articleType": 12, "baseColour": 4}, size=16)
    probs = {
        "articleType": rng.dirichlet(np.ones(12) * 0.3, n),
        "baseColour": rng.dirichlet(np.ones(4) * 0.3, n),
        "embedding": rng.normal(size=(n, 8)),
    }
    out = tmp_path / "eval"
    metrics = evaluate(probs, data, out, gallery_size=7)

    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics == summarise(probs, data)
    report = json.loads((out / "per_class_report.json").read_text())
    assert set(report) == {"articleType", "baseColour"}
    assert "articleType-11" in report["articleType"]
    assert report["baseColour"]["macro avg"]["support"] == n - 3
    pairs = json.loads((out / "confused_pairs.json").read_text())
    assert 0 < len(pairs["articleType"]) <= 10
    counts = [pair["count"] for pair in pairs["articleType"]]
    assert counts == sorted(counts, reverse=True)
    assert all(pair["true"] != pair["predicted"] for pair in pairs["articleType"])

    assert (out / "confusion_articleType.png").is_file()
    assert not (out / "confusion_baseColour.png").exists()  # 4 classes: below confusion_min_classes
    for name in ("confusion_articleType.png", "reliability.png", "errors.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
            assert min(image.size) > 100

"""Tests for export.card: the model card's sections, metrics table, plot links and reproduce command."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from app.schema import Head, ModelMetadata
from export.card import write_card
from export.data import Catalogue
from export.evaluate import evaluate

REPRODUCE = "vitrine-export --data /data/fashion --config export/configs/product-classifier.toml --version 3"


def metadata(metrics: dict[str, dict[str, float]]) -> ModelMetadata:
    return ModelMetadata(
        name="product-classifier",
        version=3,
        heads=[
            Head(
                name="articleType",
                output="articleType",
                key="type",
                role="category",
                level="article",
                labels=[f"type{i}" for i in range(12)],
            ),
            Head(
                name="baseColour",
                output="baseColour",
                key="colour",
                role="attribute",
                level=None,
                labels=["Black", "Blue", "Navy Blue", "White"],
            ),
        ],
        embedding_output="embedding",
        files={"fp32": "model.onnx", "int8": "model.int8.onnx"},
        metrics=metrics,
    )


METRICS = {
    "fp32": {
        "articleType.top1": 0.9123,
        "articleType.top5": 0.9871,
        "articleType.macro_f1": 0.801,
        "articleType.ece": 0.0312,
        "baseColour.top1": 0.6543,
        "baseColour.macro_f1": 0.5,
        "baseColour.ece": 0.07,
    },
    "int8": {"articleType.top1": 0.9081, "baseColour.top1": 0.6499},
}
DATA_REPORT = {
    "images": 44424,
    "split": {"train": 35539, "val": 4442, "test": 4443, "seed": 1234, "stratified_on": "articleType"},
    "masked_classes": {"articleType": {"Ipad": 1, "Shoe | Laces": 3}, "baseColour": {}},
    "missing_images": ["39403", "39410"],
    "undecodable_images": [],
    "empty_label_cells": {"articleType": 0, "baseColour": 3},
}
HISTORY = [
    {"epoch": 1, "train_loss": 2.0123, "val_mean_top1": 0.71, "minutes": 3.5},
    {"epoch": 2, "train_loss": 1.1, "val_mean_top1": 0.8, "minutes": 7.25},
]
RECIPE = {"size": 128, "batch_size": 64, "head_lr": 0.002, "scale_range": (0.85, 1.1)}


def table_row(text: str, first_cell: str, section: str) -> list[str]:
    """The cells after the first of the table row that starts with `first_cell` in a `## section`."""
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^\| {re.escape(first_cell)} \|(.*)\|$", body, flags=re.MULTILINE)
    assert match, f"no row for {first_cell}"
    return [cell.strip() for cell in match.group(1).split("|")]


def test_card_has_metrics_table_history_and_reproduce(tmp_path: Path) -> None:
    path = write_card(
        tmp_path,
        metadata(METRICS),
        data_report=DATA_REPORT,
        history=HISTORY,
        recipe=RECIPE,
        reproduce=REPRODUCE,
        parity={"max_abs_logit_diff": 0.0004, "top1_agreement": {"int8": 0.995}},
    )
    text = path.read_text()
    assert path == tmp_path / "README.md"
    assert text.startswith("# product-classifier v3\n")
    assert "| head | top-1 fp32 | top-1 int8 | top-5 fp32 | macro F1 fp32 | ECE fp32 |" in text
    assert table_row(text, "articleType", "Test metrics") == ["0.912", "0.908", "0.987", "0.801", "0.031"]
    assert table_row(text, "baseColour", "Test metrics") == ["0.654", "0.650", "-", "0.500", "0.070"]
    assert "| articleType | type | category | article | 12 |" in text
    assert "128x128" in text
    assert "train 35539, val 4442, test 4443" in text
    assert "Missing images: 2" in text
    assert "Empty label cells (no label for that head; the photo kept for the others): baseColour 3" in text
    assert r"Ipad (1), Shoe \| Laces (3)" in text  # a pipe in a class name does not break the table
    assert table_row(text, "2", "Training history") == ["1.1", "0.8", "7.25"]
    assert table_row(text, "scale_range", "Training recipe") == ["0.85, 1.1"]
    assert table_row(text, "top1_agreement.int8", "Export parity (ONNX against PyTorch)") == ["0.995"]
    assert f"```sh\n{REPRODUCE}\n```" in text
    assert "## Plots" not in text and ".png" not in text  # no plot files in the folder
    assert "--train-fraction" not in text


def test_card_says_when_the_model_trained_on_a_share_of_the_training_split(tmp_path: Path) -> None:
    report = {**DATA_REPORT, "split": {**DATA_REPORT["split"], "train": 17770, "train_fraction": 0.5}}  # type: ignore[dict-item]
    text = write_card(
        tmp_path, metadata(METRICS), data_report=report, history=[], recipe={}, reproduce=REPRODUCE
    ).read_text()
    assert "train 17770, val 4442, test 4443 (seed 1234), stratified on `articleType`; trained on 0.5 of" in text


def test_card_links_only_plots_that_exist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    data = Catalogue(
        ids=[str(i) for i in range(n)],
        pixels=rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8),
        labels={"articleType": rng.integers(0, 12, n), "baseColour": rng.integers(0, 4, n)},
        classes={"articleType": [f"type{i}" for i in range(12)], "baseColour": ["Black", "Blue", "Navy Blue", "White"]},
    )
    probs = {"articleType": rng.dirichlet(np.ones(12), n), "baseColour": rng.dirichlet(np.ones(4), n)}
    metrics = evaluate(probs, data, tmp_path, gallery_size=4)
    (tmp_path / "errors.png").unlink()

    text = write_card(
        tmp_path, metadata({"fp32": metrics}), data_report={}, history=[], recipe={}, reproduce=REPRODUCE
    ).read_text()
    assert "](confusion_articleType.png)" in text
    assert "](reliability.png)" in text
    assert "errors.png" not in text
    assert "confusion_baseColour.png" not in text
    assert table_row(text, "articleType", "Test metrics")[0] == f"{metrics['articleType.top1']:.3f}"
    assert "Export parity" not in text

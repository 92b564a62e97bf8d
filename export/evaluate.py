"""Test-set metrics, per-class reports and diagnostic plots for the heads of a trained model."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from export.data import IGNORE, Catalogue

log = logging.getLogger(__name__)

ECE_BINS = 15
CONFUSED_PAIRS = 10
CELL_VALUES_MAX_CLASSES = 20  # above this, per-cell numbers in a confusion matrix are unreadable


def _labelled(probs: dict[str, np.ndarray], data: Catalogue) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(true labels, probabilities) per head, IGNORE rows dropped; heads without labels (the embedding) skipped."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for head, p in probs.items():
        if head not in data.labels:
            continue
        y = data.labels[head]
        keep = y != IGNORE
        out[head] = (y[keep], p[keep])
    return out


def _bins(confidence: np.ndarray) -> np.ndarray:
    """Equal-width bin index per confidence, binned exactly as `sklearn.calibration.calibration_curve` does."""
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    return np.searchsorted(edges[1:-1], confidence)


def expected_calibration_error(y: np.ndarray, p: np.ndarray) -> float:
    """Expected calibration error of the top-1 confidence over 15 equal-width bins."""
    if len(y) == 0:
        return float("nan")
    confidence = np.clip(p.max(axis=1), 0.0, 1.0)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = _bins(confidence)
    total = np.bincount(bins, minlength=ECE_BINS)
    gap = np.bincount(bins, weights=correct, minlength=ECE_BINS) - np.bincount(
        bins, weights=confidence, minlength=ECE_BINS
    )
    # sum over bins of (n_b / N) * |acc_b - conf_b| == sum |sum_b(correct) - sum_b(conf)| / N
    return float(np.abs(gap).sum() / total.sum())


def summarise(
    probs: dict[str, np.ndarray], data: Catalogue, *, top5_heads: tuple[str, ...] = ("articleType",)
) -> dict[str, float]:
    """Flat metrics per head: top-1, top-5 (selected heads), macro precision/recall/F1 and ECE."""
    metrics: dict[str, float] = {}
    for head, (y, p) in _labelled(probs, data).items():
        if len(y) == 0:
            log.warning("head %s: no labelled rows, metrics skipped", head)
            continue
        n_classes = p.shape[1]
        pred = p.argmax(axis=1)
        metrics[f"{head}.top1"] = float(accuracy_score(y, pred))
        if head in top5_heads:
            # With five classes or fewer every row is a top-5 hit; sklearn would only warn and say 1.0.
            metrics[f"{head}.top5"] = (
                float(top_k_accuracy_score(y, p, k=5, labels=np.arange(n_classes))) if n_classes > 5 else 1.0
            )
        # Macro averages over the classes present in the ground truth of this split.
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, pred, labels=np.unique(y), average="macro", zero_division=0
        )
        metrics[f"{head}.macro_precision"] = float(precision)
        metrics[f"{head}.macro_recall"] = float(recall)
        metrics[f"{head}.macro_f1"] = float(f1)
        metrics[f"{head}.ece"] = expected_calibration_error(y, p)
    return metrics


def _save(fig: Figure, path: Path) -> None:
    """Render a figure to PNG with the Agg canvas and drop it (no pyplot state is kept)."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    fig.clear()
    log.info("wrote %s", path)


def plot_confusion(y: np.ndarray, pred: np.ndarray, names: list[str], head: str, path: Path) -> None:
    """Row-normalised confusion matrix, sized so that every class name stays legible."""
    n = len(names)
    side = min(max(8.0, 0.22 * n), 40.0)
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        y,
        pred,
        labels=np.arange(n),
        display_labels=names,
        normalize="true",
        ax=ax,
        cmap="Blues",
        include_values=n <= CELL_VALUES_MAX_CLASSES,
        values_format=".2f",
        xticks_rotation="vertical",
        colorbar=True,
    )
    font = 10 if n <= CELL_VALUES_MAX_CLASSES else 6
    ax.tick_params(axis="both", labelsize=font)
    ax.set_title(f"{head}: confusion (rows normalised to recall)")
    _save(fig, path)


def plot_reliability(labelled: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Reliability diagram: accuracy against top-1 confidence per head, with the perfect-calibration diagonal."""
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for head, (y, p) in labelled.items():
        if len(y) == 0:
            continue
        correct = (p.argmax(axis=1) == y).astype(np.int64)
        accuracy, confidence = calibration_curve(
            correct, np.clip(p.max(axis=1), 0.0, 1.0), n_bins=ECE_BINS, strategy="uniform", pos_label=1
        )
        ax.plot(confidence, accuracy, marker="o", markersize=3, label=head)
    ax.set_xlim(0, 1.01)
    ax.set_ylim(-0.01, 1.01)  # points at exactly 0 or 1 stay visible
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability")
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def plot_errors(
    pixels: np.ndarray, y: np.ndarray, p: np.ndarray, names: list[str], head: str, path: Path, size: int
) -> None:
    """Gallery of the most confident wrong predictions of one head (true, predicted, confidence)."""
    pred = p.argmax(axis=1)
    confidence = p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:size]
    cols = min(6, max(len(worst), 1))
    rows = max(math.ceil(len(worst) / cols), 1)
    fig = Figure(figsize=(2.2 * cols, 2.6 * rows), layout="constrained")
    if len(worst) == 0:
        fig.text(0.5, 0.5, f"{head}: no wrong predictions", ha="center", va="center")
    for slot, row in enumerate(worst):
        ax = fig.add_subplot(rows, cols, slot + 1)
        ax.imshow(pixels[row])
        ax.set_title(f"true {names[y[row]]}\npred {names[pred[row]]} ({confidence[row]:.2f})", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{head}: most confident errors")
    _save(fig, path)


def confused_pairs(y: np.ndarray, pred: np.ndarray, names: list[str]) -> list[dict[str, object]]:
    """The most frequent (true, predicted) off-diagonal pairs with their counts."""
    matrix = confusion_matrix(y, pred, labels=np.arange(len(names)))
    np.fill_diagonal(matrix, 0)
    flat = np.argsort(-matrix, axis=None, kind="stable")[:CONFUSED_PAIRS]
    pairs = []
    for true, predicted in zip(*np.unravel_index(flat, matrix.shape), strict=True):
        if matrix[true, predicted] > 0:
            pairs.append({"true": names[true], "predicted": names[predicted], "count": int(matrix[true, predicted])})
    return pairs


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s", path)


def evaluate(
    probs: dict[str, np.ndarray],
    data: Catalogue,
    out: Path,
    *,
    top5_heads: tuple[str, ...] = ("articleType",),
    confusion_min_classes: int = 10,
    gallery_size: int = 24,
) -> dict[str, float]:
    """Write metrics, per-class reports, confused pairs and plots into `out`; return the summary metrics."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = summarise(probs, data, top5_heads=top5_heads)
    _write_json(out / "metrics.json", metrics)
    labelled = {head: yp for head, yp in _labelled(probs, data).items() if len(yp[0])}
    reports: dict[str, object] = {}
    pairs: dict[str, object] = {}
    for head, (y, p) in labelled.items():
        names = data.classes[head]
        pred = p.argmax(axis=1)
        reports[head] = classification_report(
            y, pred, labels=np.arange(len(names)), target_names=names, output_dict=True, zero_division=0
        )
        pairs[head] = confused_pairs(y, pred, names)
        if len(names) >= confusion_min_classes:
            plot_confusion(y, pred, names, head, out / f"confusion_{head}.png")
    _write_json(out / "per_class_report.json", reports)
    _write_json(out / "confused_pairs.json", pairs)
    plot_reliability(labelled, out / "reliability.png")
    if labelled:
        first = next(iter(labelled))
        keep = data.labels[first] != IGNORE
        y, p = labelled[first]
        plot_errors(data.pixels[keep], y, p, data.classes[first], first, out / "errors.png", gallery_size)
    log.info(
        "evaluation of %d images written to %s: %s",
        len(data),
        out,
        {k: round(v, 4) for k, v in metrics.items() if k.endswith(".top1")},
    )
    return metrics

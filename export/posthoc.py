"""Post-hoc changes to a trained model's answers, measured before anyone builds them into the service.

`python -m export.posthoc --work runs/<training run> --model models/<name>/<version>/model.int8.onnx`
runs the ONNX file over the work folder's train/validation/test split and prints top-1 per head for:
the model as served; test-time horizontal flip (logits of both views averaged, 2x the model cost);
prior adjustment (logits + tau * log(training class count), undoing the class weighting); a vote of the
K nearest training images by embedding, blended into the softmax (also with each query's
near-duplicate photos masked out of the memory, as the hold-out was built); and, for colour, a logistic
regression on foreground colour histograms stacked onto the colour head. Each knob is chosen on the
validation split and then read on the test split once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from app.runtime import softmax
from export.config import DEFAULT_CONFIG, DataConfig, ExportConfig
from export.convert import onnx_outputs, read_onnx_metadata
from export.data import IGNORE
from export.memory import correct
from export.pipeline import prepare, read_lineage

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
TAUS = np.round(np.linspace(-0.5, 1.0, 16), 2)
BLENDS = np.round(np.linspace(0.0, 1.0, 11), 2)
HISTOGRAM_BINS = 6  # per channel: 216 RGB bins
WHITE = 235  # a pixel with every channel at or above this is background
NEAR_DUPLICATE_MAD = 3.0  # mean absolute pixel difference (0-255) below which two photos are the same photo


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy over the labelled rows."""
    return float(correct(logits, labels).mean())


def prior_adjusted(logits: np.ndarray, train_labels: np.ndarray, tau: float) -> np.ndarray:
    """Logits + tau * log(class count in training): tau > 0 favours frequent classes."""
    counts = np.bincount(train_labels[train_labels != IGNORE], minlength=logits.shape[1])
    adjusted: np.ndarray = logits + tau * np.log(counts + 1.0)
    return adjusted


def neighbour_votes(
    similarity: np.ndarray, memory_labels: np.ndarray, classes: int, *, k: int, temperature: float
) -> np.ndarray:
    """Class distribution of each query's k most similar memory rows, weighted by exp(similarity / T)."""
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    sims = np.take_along_axis(similarity, nearest, axis=1)
    weights = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature)
    labels = memory_labels[nearest]
    weights[labels == IGNORE] = 0.0
    votes = np.zeros((len(similarity), classes))
    rows = np.repeat(np.arange(len(similarity)), k)
    np.add.at(votes, (rows, np.where(labels == IGNORE, 0, labels).ravel()), weights.ravel())
    distribution: np.ndarray = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)
    return distribution


def mask_near_duplicates(
    similarity: np.ndarray,
    queries: np.ndarray,
    memory: np.ndarray,
    *,
    candidates: int = 64,
    threshold: float = NEAR_DUPLICATE_MAD,
) -> np.ndarray:
    """The similarity with memory photos that near-duplicate their query (by the hold-out's rule) set to -inf.

    The blind hold-out had every shared photo within a mean absolute pixel difference of 3/255 of a
    hold-out photo removed; our split did not, so a vote that finds the same photo under another id
    looks better here than it can there. Only each query's `candidates` most similar rows are checked.
    """
    masked = similarity.copy()
    candidates = min(candidates, similarity.shape[1] - 1)
    nearest = np.argpartition(-similarity, candidates, axis=1)[:, :candidates]
    for row, index in enumerate(nearest):
        mad = np.abs(memory[index].astype(np.int16) - queries[row].astype(np.int16)).mean(axis=(1, 2, 3))
        masked[row, index[mad < threshold]] = -np.inf
    return masked


def colour_histograms(pixels: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Square-rooted RGB histogram of each image's non-white pixels (every other pixel sampled)."""
    out = np.zeros((len(pixels), bins**3), dtype=np.float32)
    for i, image in enumerate(pixels):
        rgb = image[::2, ::2].reshape(-1, 3).astype(np.int32)
        foreground = rgb[(rgb < WHITE).any(axis=1)]
        rgb = foreground if len(foreground) else rgb
        index = ((rgb * bins) // 256) @ np.array([bins * bins, bins, 1])
        out[i] = np.bincount(index, minlength=bins**3) / len(rgb)
    return np.sqrt(out)


def regression_log_probs(regression: LogisticRegression, features: np.ndarray, classes: int) -> np.ndarray:
    """A fitted classifier's log-probabilities over all `classes` of a head (-20 for classes it never saw)."""
    log_p = np.full((len(features), classes), -20.0)
    log_p[:, regression.classes_] = np.log(np.clip(regression.predict_proba(features), 1e-9, 1))
    return log_p


def _best(scores: dict[float, float]) -> float:
    return max(scores, key=lambda knob: scores[knob])


def work_config(work: Path, model: Path, base: ExportConfig) -> tuple[ExportConfig, Path]:
    """The config the work folder's split was made with (data section, seed, the model's size), and its data path.

    `prepare` re-decodes and re-splits when the config differs from the cached one, so the split must be
    asked for exactly as the training run asked for it.
    """
    size = read_onnx_metadata(model).preprocessing.size
    meta = work / f"catalogue-{size}.json"  # the cache's metadata at the model's size (older folders: one file)
    saved = json.loads((meta if meta.exists() else work / "catalogue.json").read_text())
    seed = (read_lineage(work)[-1].get("recipe") or {}).get("seed", base.train.seed)
    train = base.train.model_copy(update={"size": size, "seed": seed})
    config = base.model_copy(update={"data": DataConfig.model_validate(saved["config"]), "train": train})
    return config, Path(saved["data"])


def measure(work: Path, model: Path, config: ExportConfig, data: Path, *, k: int, temperature: float) -> list[str]:
    """The comparison table (markdown lines) for one model file and one work folder's split."""
    splits = prepare(data, config, work)
    k = min(k, len(splits.train) - 1)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    outputs = {name: onnx_outputs(model, part.pixels) for name, part in parts.items()}
    flipped = {name: onnx_outputs(model, np.ascontiguousarray(parts[name].pixels[:, :, ::-1])) for name in SPLITS}
    memory = outputs["train"]["embedding"]
    similarity = {"all": {s: outputs[s]["embedding"] @ memory.T for s in SPLITS}}
    similarity["masked"] = {
        s: mask_near_duplicates(similarity["all"][s], parts[s].pixels, parts["train"].pixels) for s in SPLITS
    }
    histograms = {name: colour_histograms(part.pixels) for name, part in parts.items()}
    lines = [
        "| head | split | as served | flip TTA | prior (tau) | neighbours (blend) "
        "| neighbours, near-duplicates masked (blend) | colour histograms (weight) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for head in splits.train.classes:
        y = {name: part.labels[head] for name, part in parts.items()}
        n = len(splits.train.classes[head])
        log_p = {s: np.log(softmax(outputs[s][head])) for s in SPLITS}
        flip = {s: log_p[s] + np.log(softmax(flipped[s][head])) for s in SPLITS}
        tau = _best({t: top1(prior_adjusted(outputs["val"][head], y["train"], t), y["val"]) for t in TAUS})
        cells = {}
        for kind, sims in similarity.items():
            votes = {s: neighbour_votes(sims[s], y["train"], n, k=k, temperature=temperature) for s in SPLITS}
            blended = {a: {s: (1 - a) * np.exp(log_p[s]) + a * votes[s] for s in SPLITS} for a in BLENDS}
            blend = _best({a: top1(blended[a]["val"], y["val"]) for a in BLENDS})
            cells[kind] = {s: f"{top1(blended[blend][s], y[s]):.3f} ({blend:g})" for s in SPLITS}
        stacked: dict[str, str] = dict.fromkeys(SPLITS, "-")
        if head == "baseColour":
            keep = y["train"] != IGNORE
            regression = LogisticRegression(C=3.0, max_iter=300).fit(histograms["train"][keep], y["train"][keep])
            hist_log_p = {s: regression_log_probs(regression, histograms[s], n) for s in SPLITS}
            weight = _best({w: top1(log_p["val"] + w * hist_log_p["val"], y["val"]) for w in BLENDS[:6]})
            stacked = {s: f"{top1(log_p[s] + weight * hist_log_p[s], y[s]):.3f} ({weight:g})" for s in SPLITS}
        for s in SPLITS:
            lines.append(
                f"| {head} | {s} | {top1(log_p[s], y[s]):.3f} | {top1(flip[s], y[s]):.3f} "
                f"| {top1(prior_adjusted(outputs[s][head], y['train'], tau), y[s]):.3f} ({tau:+g}) "
                f"| {cells['all'][s]} | {cells['masked'][s]} | {stacked[s]} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export.posthoc`."""
    parser = argparse.ArgumentParser(prog="python -m export.posthoc", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder of the training run (its split)")
    parser.add_argument("--model", type=Path, required=True, help="ONNX file to measure")
    parser.add_argument(
        "--data", type=Path, help="the catalogue export (default: the one the work folder was made from)"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--neighbours", type=int, default=20, help="k of the neighbour vote")
    parser.add_argument("--temperature", type=float, default=0.05, help="of the neighbour vote's weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, data = work_config(args.work, args.model, ExportConfig.load(args.config))
    lines = measure(
        args.work,
        args.model,
        config,
        args.data or data,
        k=args.neighbours,
        temperature=args.temperature,
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

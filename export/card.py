"""The model card (`README.md`) written into each exported model version folder."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from app.schema import ModelMetadata

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
PRECISION_ORDER = ("fp32", "fp16", "int8")

LIMITS = (
    "Trained on small (60x80) product photos on a white background from one Indian fashion retailer's catalogue; "
    "street photos, cluttered backgrounds, several products in one image or other catalogues' styles may fail.",
    "Season and year are not visible in a product image: a season answer is a guess from product type, fabric "
    "and colour as they correlated in the catalogue, and no year is predicted.",
    "Colour labels are noisy between neighbouring shades (e.g. navy/blue, cream/beige/off white, grey/charcoal).",
    "Every head answers with one of its known classes: a product type absent from the training catalogue is "
    "forced into the nearest known class, often with high confidence.",
    "Classes with too few images were masked (see Data); the model never predicts them.",
)


def _cell(value: object) -> str:
    """A value as a Markdown table cell: floats to 4 significant digits, pipes escaped."""
    if isinstance(value, float):
        text = "n/a" if math.isnan(value) else f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _flatten(values: Mapping[str, object], prefix: str = "") -> list[list[object]]:
    """Nested dicts as (dotted key, value) rows."""
    rows: list[list[object]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append([f"{prefix}{key}", value])
    return rows


def _metric(metrics: Mapping[str, float], key: str) -> str:
    """One metric to three decimals, or a dash when it was not measured."""
    value = metrics.get(key)
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _model_section(meta: ModelMetadata) -> list[str]:
    pre = meta.preprocessing
    heads = [[h.name, h.key, h.role, h.level or "", len(h.labels)] for h in meta.heads]
    embedding = f" and an L2-normalised embedding output `{meta.embedding_output}`" if meta.embedding_output else ""
    if meta.members:
        listed = "; ".join(f"{i}. {member} (card `member-{i}.md`)" for i, member in enumerate(meta.members, 1))
        shape = (
            f"an ensemble of {len(meta.members)} packaged versions: {listed}. Each member runs its own backbone, "
            f"heads and memory vote on the same input; each of the {len(meta.heads)} heads answers the log of the "
            f"mean of the members' softmax, and the embedding output `{meta.embedding_output}` is member 1's"
        )
    else:
        shape = f"one shared backbone, {len(meta.heads)} classification heads{embedding}"
    return [
        "## Model",
        "",
        f"Architecture `{meta.architecture}`: {shape}. Each head answers in the API under its key.",
        "",
        *markdown_table(["head (CSV column)", "API key", "role", "level", "classes"], heads),
        "",
        f"Input: `{pre.input_name}`, {pre.dtype} {pre.layout} {pre.channel_order}, {pre.size}x{pre.size} pixels. "
        f"Preprocessing: {pre.resize} ({pre.resample}; the longest side scaled to {pre.size}, centred on an RGB "
        f"{pre.pad_colour} canvas); normalisation `(x - {pre.mean:g}) / {pre.std:g}` runs inside the graph.",
        "",
    ]


def _data_section(report: Mapping[str, object]) -> list[str]:
    lines = ["## Data", "", f"- Images decoded: {report.get('images', 'n/a')}"]
    split = report.get("split")
    if isinstance(split, Mapping):
        parts = ", ".join(f"{k} {split[k]}" for k in ("train", "val", "test") if k in split)
        extra = f" (seed {split['seed']})" if "seed" in split else ""
        stratified = f", stratified on `{split['stratified_on']}`" if split.get("stratified_on") else ""
        fraction = split.get("train_fraction", 1.0)
        share = f"; trained on {fraction:g} of the training split (`--train-fraction`)" if fraction != 1.0 else ""
        lines.append(f"- Split: {parts}{extra}{stratified}{share}")
    for key, label in (
        ("missing_images", "Missing images"),
        ("undecodable_images", "Undecodable images"),
        ("unreadable_archives", "Unreadable tar files"),
    ):
        items = report.get(key)
        if isinstance(items, list):
            lines.append(f"- {label}: {len(items)}")
    empty = report.get("empty_label_cells")
    if isinstance(empty, Mapping) and any(empty.values()):
        cells = ", ".join(f"{head} {n}" for head, n in empty.items() if n)
        lines.append(f"- Empty label cells (no label for that head; the photo kept for the others): {cells}")
    masked = report.get("masked_classes")
    if isinstance(masked, Mapping):
        rows: list[list[object]] = [
            [head, len(classes), [f"{name} ({count})" for name, count in classes.items()]]
            for head, classes in masked.items()
            if isinstance(classes, Mapping) and classes
        ]
        note = "Classes masked for having too few images (count in brackets; labels ignored in training and test):"
        lines += ["", note, ""]
        lines += markdown_table(["head", "masked", "classes"], rows) if rows else ["None."]
    return [*lines, ""]


def _metrics_section(meta: ModelMetadata) -> list[str]:
    precisions = [p for p in PRECISION_ORDER if p in meta.metrics] + sorted(set(meta.metrics) - set(PRECISION_ORDER))
    fp32 = meta.metrics.get("fp32", {})
    header = ["head", *[f"top-1 {p}" for p in precisions], "top-5 fp32", "macro F1 fp32", "ECE fp32"]
    rows: list[list[object]] = []
    for head in meta.heads:
        rows.append(
            [
                head.name,
                *[_metric(meta.metrics[p], f"{head.name}.top1") for p in precisions],
                *[_metric(fp32, f"{head.name}.{m}") for m in ("top5", "macro_f1", "ece")],
            ]
        )
    return [
        "## Test metrics",
        "",
        *markdown_table(header, rows),
        "",
        "ECE: expected calibration error of the top-1 confidence (15 equal-width bins); lower is better.",
        "",
    ]


def _confusions_section(folder: Path, per_head: int = 5) -> list[str]:
    """The most frequent (true, predicted) mistakes per head, from `confused_pairs.json` if present."""
    path = folder / "confused_pairs.json"
    if not path.is_file():
        return []
    pairs: Mapping[str, Sequence[Mapping[str, object]]] = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        [head, pair.get("true"), pair.get("predicted"), pair.get("count")]
        for head, items in pairs.items()
        for pair in list(items)[:per_head]
    ]
    if not rows:
        return []
    return [
        "## Most confused pairs (test split)",
        "",
        *markdown_table(["head", "true", "predicted", "images"], rows),
        "",
    ]


def _memory_section(memory: object) -> list[str]:
    """What the in-graph vote of similar training photos does, if the version has one."""
    if not isinstance(memory, Mapping):
        return []
    blend = memory.get("blend") or {}
    heads = ", ".join(f"{head} ({weight:g})" for head, weight in blend.items()) if blend else "none"
    return [
        "## Memory vote",
        "",
        f"The graph holds the embeddings of the {memory.get('photos')} training photos (PCA to "
        f"{memory.get('dimensions')} dimensions, int8). For each photo the {memory.get('neighbours')} most "
        "similar ones vote with their labels, and the heads below answer "
        "`(1 - w) * softmax + w * vote` (their outputs are log-probabilities). A head got a weight only "
        "where the vote raised its validation top-1 significantly (one-sided exact McNemar test, "
        f"p < {memory.get('significance')}). Heads and weights w: {heads}.",
        "",
    ]


def write_card(
    folder: Path,
    meta: ModelMetadata,
    *,
    data_report: Mapping[str, object],
    history: Sequence[Mapping[str, object]],
    recipe: Mapping[str, object],
    reproduce: str,
    parity: Mapping[str, object] | None = None,
) -> Path:
    """Write the Markdown model card `folder/README.md` and return its path."""
    lines = [f"# {meta.name} v{meta.version}", ""]
    if meta.created:
        lines += [f"Created {meta.created}.", ""]
    lines += _model_section(meta)
    lines += _memory_section(recipe.get("memory_vote"))
    lines += _data_section(data_report)
    lines += ["## Training recipe", "", *markdown_table(["setting", "value"], _flatten(recipe)), ""]
    columns = list(dict.fromkeys(key for record in history for key in record))
    lines += ["## Training history", ""]
    none = "In the members' cards." if meta.members else "None."
    lines += (
        [*markdown_table(columns, [[r.get(c, "") for c in columns] for r in history]), ""] if history else [none, ""]
    )
    lines += _metrics_section(meta)
    if parity:
        against = "the members run one by one" if meta.members else "PyTorch"
        lines += [
            f"## Export parity (ONNX against {against})",
            "",
            *markdown_table(["check", "value"], _flatten(parity)),
            "",
        ]
    lines += _confusions_section(folder)
    plots = [*sorted(folder.glob("confusion_*.png")), folder / "reliability.png", folder / "errors.png"]
    existing = [p.name for p in plots if p.is_file()]
    if existing:
        lines += ["## Plots", ""] + [f"![{Path(name).stem}]({name})\n" for name in existing]
    lines += ["## Limits", "", *[f"- {limit}" for limit in LIMITS], ""]
    lines += ["## How to reproduce", "", "```sh", reproduce.strip(), "```", ""]
    path = folder / CARD_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote model card %s", path)
    return path

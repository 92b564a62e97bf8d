"""The export steps (prepare, train, evaluate, convert, quantize, card) over one work folder."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.runtime import softmax
from app.schema import Head, ModelMetadata, Preprocessing
from export.config import ExportConfig
from export.convert import onnx_outputs
from export.data import Catalogue, distribution, load_catalogue, split
from export.evaluate import summarise
from export.network import MultiHeadClassifier, build_efficientnet_classifier
from export.quantize import benchmark_cpu

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """The three splits of one prepared catalogue."""

    train: Catalogue
    val: Catalogue
    test: Catalogue


def preprocessing(config: ExportConfig) -> Preprocessing:
    """The preprocessing written into the model metadata (normalisation runs inside the graph)."""
    return Preprocessing(size=config.train.size)


def prepare(data: Path, config: ExportConfig, work: Path) -> Splits:
    """Decode the catalogue (cached in `work`), split it, and write the data report."""
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"catalogue-{config.train.size}.npz"
    meta = work / "catalogue.json"
    if cache.exists() and meta.exists():
        saved = json.loads(meta.read_text())
        if saved.get("data") == str(data.resolve()) and saved.get("config") == config.data.model_dump(mode="json"):
            arrays = np.load(cache)
            catalogue = Catalogue(
                ids=saved["ids"],
                pixels=arrays["pixels"],
                labels={k: arrays[f"label_{k}"] for k in saved["classes"]},
                classes=saved["classes"],
                report=saved["report"],
            )
            log.info("using cached catalogue %s (%d images)", cache, len(catalogue))
            return _split_and_report(catalogue, config, work)
    catalogue = load_catalogue(data, config.heads, config.data, preprocessing(config))
    arrays = {"pixels": catalogue.pixels, **{f"label_{k}": v for k, v in catalogue.labels.items()}}
    np.savez(cache, **arrays)
    meta.write_text(
        json.dumps(
            {
                "data": str(data.resolve()),
                "config": config.data.model_dump(mode="json"),
                "ids": catalogue.ids,
                "classes": catalogue.classes,
                "report": catalogue.report,
            }
        )
    )
    return _split_and_report(catalogue, config, work)


def _split_and_report(catalogue: Catalogue, config: ExportConfig, work: Path) -> Splits:
    train, val, test = split(catalogue, config.data, config.train.seed)
    report = {
        **catalogue.report,
        "split": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "seed": config.train.seed,
            "stratified_on": config.data.stratify_column,
        },
        "classes": {k: len(v) for k, v in catalogue.classes.items()},
        "distribution_train": distribution(train),
        "distribution_test": distribution(test),
    }
    (work / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (work / "split.json").write_text(json.dumps({"train": train.ids, "val": val.ids, "test": test.ids}))
    log.info(
        "data: %d train, %d val, %d test images; masked classes: %s",
        len(train),
        len(val),
        len(test),
        catalogue.report.get("masked_classes"),
    )
    return Splits(train, val, test)


def build_model(classes: dict[str, list[str]], config: ExportConfig, *, pretrained: bool = True) -> MultiHeadClassifier:
    """The configured EfficientNet-Lite with one head per configured column."""
    sizes = {h.column: len(classes[h.column]) for h in config.heads}
    return build_efficientnet_classifier(
        sizes, pretrained=pretrained, dropout=config.train.dropout, backbone=config.backbone
    )


def load_trained(work: Path, classes: dict[str, list[str]], config: ExportConfig) -> MultiHeadClassifier:
    """The model with the best checkpoint of a finished training run."""
    model = build_model(classes, config, pretrained=False)
    state = torch.load(work / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    return model.eval()


def metadata(
    config: ExportConfig, classes: dict[str, list[str]], version: int, *, name: str | None = None
) -> ModelMetadata:
    """Model metadata for a trained model: heads in output order, labels as in the CSV."""
    heads = [
        Head(name=h.column, output=h.column, key=h.key, role=h.role, level=h.level, labels=classes[h.column])
        for h in config.heads
    ]
    return ModelMetadata(
        name=name or config.name,
        version=version,
        preprocessing=preprocessing(config),
        heads=heads,
        architecture=config.backbone,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


LINEAGE = "lineage.json"
FILES = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}  # per precision, in a version folder


@dataclass
class FileScores:
    """What `score_files` measured per precision."""

    metrics: dict[str, dict[str, float]]  # per precision: `summarise` on the test split
    speed: dict[str, float]  # per precision but FP16 (it is for GPUs): CPU images/s at batch 32
    probs: dict[str, dict[str, np.ndarray]]  # per precision: softmax per head name on the test split


def file_probabilities(path: Path, outputs: dict[str, str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Softmax per head name from an ONNX file over uint8 pixels; `outputs` maps head name to output name
    (outputs are logits or log-probabilities)."""
    raw = onnx_outputs(path, pixels)
    return {head: softmax(raw[output].astype(np.float32)) for head, output in outputs.items()}


def score_files(
    paths: dict[str, Path], outputs: dict[str, str], test: Catalogue, *, bench_seconds: float
) -> FileScores:
    """Run each precision's ONNX file on the test split: metrics, CPU speed, probabilities.

    `paths` maps precision to file, `outputs` head name to ONNX output name."""
    scores = FileScores({}, {}, {})
    for precision, path in paths.items():
        probs = file_probabilities(path, outputs, test.pixels)
        scores.probs[precision] = probs
        scores.metrics[precision] = summarise(probs, test)
        if precision != "fp16":  # its CPU speed says nothing
            scores.speed[precision] = benchmark_cpu(path, test.pixels[:256], batch_size=32, seconds=bench_seconds)
    return scores


def read_lineage(work: Path) -> list[dict[str, Any]]:
    """The training stages behind a work folder's weights, oldest first: each stage's command and history.

    A folder trained before lineage was recorded counts as one stage with an unknown command.
    """
    path = work / LINEAGE
    if path.exists():
        stages: list[dict[str, Any]] = json.loads(path.read_text())["stages"]
        return stages
    history = work / "history.json"
    return [{"command": None, "history": json.loads(history.read_text()) if history.exists() else []}]


def record_lineage(
    work: Path, command: str, init_from: Path | None, recipe: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Write `work/lineage.json` after a training run: the stages of the run it continued (if any), then its own
    (command, training recipe as run, epoch history)."""
    stages = read_lineage(init_from.resolve().parent.parent) if init_from is not None else []  # <work>/checkpoints/x.pt
    history = json.loads((work / "history.json").read_text()) if (work / "history.json").exists() else []
    stages.append({"command": command, "recipe": recipe, "history": history})
    (work / LINEAGE).write_text(json.dumps({"stages": stages}, indent=2))
    return stages


def next_version(model_dir: Path) -> int:
    """One above the highest numeric version folder (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def version_folder(model_dir: Path, version: int | None, *, overwrite: bool) -> tuple[Path, int]:
    """Create the version folder to write into."""
    version = version or next_version(model_dir)
    folder = model_dir / str(version)
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass --overwrite or another --version")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder, version

"""The packaging steps, each runnable alone: convert a checkpoint, quantise an FP32 file, evaluate a file.

`package` chains them into a version folder. Run alone (`vitrine export convert|quantize|evaluate`), they
write into the work folder and never into a model repository: a committed version is not rewritten, and a
result worth shipping is packaged as a new version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from app.schema import MemoryVote, ModelMetadata
from export.calibration import apply_temperatures, fit_temperatures
from export.config import ExportConfig
from export.convert import ParityReport, check_parity, export_onnx, read_onnx_metadata
from export.data import Catalogue
from export.evaluate import evaluate
from export.memory import fit_memory
from export.network import MultiHeadClassifier
from export.pipeline import FILES, Int8LossError, Splits, file_probabilities, load_trained
from export.quantize import Calibration, convert_fp16, quantize_int8
from export.train import predict

log = logging.getLogger(__name__)

PARITY_IMAGES = 512


@dataclass
class Converted:
    """A trained checkpoint as calibrated FP32 ONNX, and what converting it chose and measured."""

    model: MultiHeadClassifier  # temperatures set, memory vote attached (if configured)
    path: Path
    parity: ParityReport
    temperatures: dict[str, float]
    memory_recipe: dict[str, Any]  # the config's memory section and the vote kept; empty without one


def convert_checkpoint(splits: Splits, config: ExportConfig, work: Path, meta: ModelMetadata, path: Path) -> Converted:
    """The work folder's best checkpoint: temperatures and memory vote fitted, exported to `path`, parity asserted.

    Sets `meta.memory_vote` to the vote in the graph (None when no head kept a weight)."""
    model = load_trained(work, splits.train.classes, config)
    val_outputs = predict(model, splits.val.pixels)
    temperatures = fit_temperatures(val_outputs, splits.val.labels)
    model.set_temperatures(temperatures)
    log.info(
        "softmax temperatures fitted on the validation split: %s", {k: round(v, 3) for k, v in temperatures.items()}
    )
    memory_recipe: dict[str, Any] = {}
    meta.memory_vote = None
    if config.memory is not None:
        calibrated = apply_temperatures(val_outputs, temperatures)  # as the model now answers, without a rerun
        memory = fit_memory(model, splits.train, splits.val, config.memory, calibrated)
        model.memory = memory
        vote = MemoryVote(
            photos=len(splits.train),
            dimensions=memory.dimensions,
            neighbours=memory.k,
            blend={h: w for h, w in memory.blend.items() if w > 0},
        )
        memory_recipe = {**config.memory.model_dump(), **vote.model_dump()}
        meta.memory_vote = vote if vote.blend else None  # with no weight kept the graph has no vote
    export_onnx(model, meta, path)
    parity = check_parity(model, path, splits.val.pixels[:PARITY_IMAGES], [h.column for h in config.heads])
    return Converted(model, path, parity, temperatures, memory_recipe)


def calibration_pixels(train: Catalogue, config: ExportConfig) -> np.ndarray:
    """The seeded sample of training photos that INT8 calibration reads."""
    rng = np.random.default_rng(config.train.seed)
    count = min(config.calibration_images, len(train))
    return train.pixels[rng.choice(len(train), count, replace=False)]


def quantize_files(
    fp32: Path,
    folder: Path,
    calibration: np.ndarray,
    *,
    method: Calibration = "minmax",
    float_first_convs: int = 3,
    float_last_convs: int = 1,
) -> dict[str, Path]:
    """INT8 and FP16 files of `fp32`, written into `folder` under the version folder's names."""
    int8 = quantize_int8(
        fp32,
        folder / FILES["int8"],
        calibration,
        calibration=method,
        float_first_convs=float_first_convs,
        float_last_convs=float_last_convs,
    )
    return {"int8": int8, "fp16": convert_fp16(fp32, folder / FILES["fp16"])}


def check_fp32(path: Path) -> None:
    """Raise `ValueError` unless `path` is a float32 graph (not already quantised or converted to FP16)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node):
        raise ValueError(f"{path} is already quantised: give the FP32 file")
    if any(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in graph.initializer):
        raise ValueError(f"{path} holds FP16 weights: give the FP32 file")


def int8_drops(metrics: dict[str, dict[str, float]], heads: list[str], limit: float) -> dict[str, float]:
    """INT8's top-1 loss against FP32 per head; raises `Int8LossError` if any exceeds `limit`.

    Heads without test metrics (no labelled test image) are skipped."""
    scored = [h for h in heads if f"{h}.top1" in metrics["fp32"] and f"{h}.top1" in metrics["int8"]]
    if len(scored) < len(heads):
        log.warning("INT8 check skips heads without test metrics: %s", ", ".join(h for h in heads if h not in scored))
    drops = {h: metrics["fp32"][f"{h}.top1"] - metrics["int8"][f"{h}.top1"] for h in scored}
    if not drops:
        return drops
    log.info("INT8 top-1 change per head (points): %s", {h: round(-100 * d, 2) for h, d in drops.items()})
    worst = max(drops, key=lambda h: drops[h])
    if drops[worst] > limit:
        raise Int8LossError(f"INT8 loses {100 * drops[worst]:.2f} points of top-1 on {worst} (limit {100 * limit:.1f})")
    return drops


def model_file(path: Path, precision: str) -> tuple[Path, ModelMetadata]:
    """An ONNX file and its metadata, from a version folder (its file of `precision`) or an ONNX file."""
    if path.is_dir():
        meta = ModelMetadata.read(path)
        if precision not in meta.files:
            raise ValueError(f"{path} has no {precision} file (it has {', '.join(meta.files)})")
        return path / meta.files[precision], meta
    return path, read_onnx_metadata(path)


def check_matches(meta: ModelMetadata, data: Catalogue) -> None:
    """Raise `ValueError` unless the data was prepared at the model's input size with the model's labels."""
    size = int(data.pixels.shape[1])
    if size != meta.preprocessing.size:
        raise ValueError(f"the data is at {size} px, the model reads {meta.preprocessing.size} (pass --size)")
    for head in meta.heads:
        if data.classes.get(head.name) != head.labels:
            raise ValueError(
                f"head {head.name}: the data's classes differ from the model's labels (another config, "
                "--min-class-count or catalogue?)"
            )


def evaluate_file(path: Path, meta: ModelMetadata, data: Catalogue, report: Path) -> dict[str, float]:
    """The evaluation report of one ONNX file on `data` (a split), written into `report`; returns its metrics."""
    check_matches(meta, data)
    log.info("evaluating %s on %d images", path, len(data))
    return evaluate(file_probabilities(path, {h.name: h.output for h in meta.heads}, data.pixels), data, report)

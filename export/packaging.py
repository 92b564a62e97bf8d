"""Package a trained work folder into a version folder: evaluate, convert, quantise, score, write the card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from app.schema import ModelMetadata
from export.card import write_card
from export.config import ExportConfig
from export.evaluate import evaluate
from export.pipeline import FILES, Splits, metadata, score_files, version_folder
from export.steps import calibration_pixels, convert_checkpoint, int8_drops, quantize_files
from export.train import predict

log = logging.getLogger(__name__)


def package(
    splits: Splits,
    config: ExportConfig,
    work: Path,
    out: Path,
    version: int | None,
    *,
    overwrite: bool,
    reproduce: str,
    stages: list[dict[str, Any]],
    bench_seconds: float = 3.0,
) -> Path:
    """Convert, quantise and evaluate a trained work folder into a version folder with its card."""
    with version_folder(out, version, overwrite=overwrite) as (folder, number):
        _package_into(
            folder, number, splits, config, work, out, reproduce=reproduce, stages=stages, bench_seconds=bench_seconds
        )
    log.info("wrote %s", out / str(number))
    return out / str(number)


def _package_into(
    folder: Path,
    version: int,
    splits: Splits,
    config: ExportConfig,
    work: Path,
    out: Path,
    *,
    reproduce: str,
    stages: list[dict[str, Any]],
    bench_seconds: float,
) -> None:
    """`package` into `folder` (the version folder being built)."""
    classes = splits.train.classes
    meta = metadata(config, classes, version, name=out.name)  # the repository folder names the model
    heads = [h.column for h in config.heads]

    converted = convert_checkpoint(splits, config, work, meta, folder / FILES["fp32"])
    log.info("evaluating the PyTorch model on %d test images", len(splits.test))
    evaluate(predict(converted.model, splits.test.pixels), splits.test, folder)
    paths = {"fp32": converted.path, **quantize_files(converted.path, folder, calibration_pixels(splits.train, config))}
    meta.files = {precision: path.name for precision, path in paths.items()}

    scores = score_files(paths, {h: h for h in heads}, splits.test, bench_seconds=bench_seconds)
    meta.metrics, speed = scores.metrics, scores.speed
    int8_drops(meta.metrics, heads, config.max_int8_top1_drop)
    meta.write(folder)

    # One table over all training stages (a continued run has several), epochs numbered per stage.
    history = [{"stage": n, **record} for n, stage in enumerate(stages, 1) for record in stage["history"]]
    data_report = json.loads((work / "data_report.json").read_text())
    (folder / "data_report.json").write_text(json.dumps(data_report, indent=2, ensure_ascii=False))
    recipe = {
        # The recipe of the last training stage as it ran (not this command's defaults).
        **(stages[-1].get("recipe") or config.train.model_dump(mode="json")),
        "heads": ", ".join(heads),
        "softmax_temperature": {k: round(v, 3) for k, v in converted.temperatures.items()},
        **({"memory_vote": converted.memory_recipe} if converted.memory_recipe else {}),
        "cpu_images_per_second_batch32": {k: round(v) for k, v in speed.items()},
    }
    parity = converted.parity
    write_card(
        folder,
        meta,
        data_report=data_report,
        history=history,
        recipe=recipe,
        reproduce=reproduce,
        parity={
            "images": parity.images,
            "max_abs_logit_diff": parity.max_abs_logit_diff,
            "top1_agreement": parity.top1_agreement,
        },
    )
    ModelMetadata.read(folder)  # the folder must load as the service will load it

"""`python -m export` / `vitrine export`: build a model version, or run one step of it."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.schema import MemoryVote, ModelMetadata
from export.calibration import fit_temperatures
from export.card import write_card
from export.config import DEFAULT_CONFIG, LITE_VARIANTS, ExportConfig, TrainConfig
from export.convert import check_parity, export_onnx
from export.ensemble import build_ensemble
from export.evaluate import evaluate
from export.memory import fit_memory
from export.pipeline import (
    FILES,
    Splits,
    build_model,
    load_trained,
    metadata,
    prepare,
    read_lineage,
    record_lineage,
    score_files,
    version_folder,
)
from export.quantize import convert_fp16, quantize_int8
from export.train import predict, train

log = logging.getLogger("export")

PARITY_IMAGES = 512


def _args(argv: list[str]) -> argparse.Namespace:
    # Every step reads the catalogue; the same data options give the same split and classes.
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", type=Path, required=True, help="catalogue export: images (folder/tars) + CSV")
    data.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="heads and recipe (TOML)")
    data.add_argument("--work", type=Path, help="work folder for cache and checkpoints (default runs/<name>)")
    data.add_argument("--limit", type=int, help="use only this many images (smoke runs)")
    data.add_argument("--min-class-count", type=int, help="override the minimum images per class")
    data.add_argument("--size", type=int, help="override the input size in pixels")
    # Steps that write a version folder.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/product-classifier")
    output.add_argument("--version", type=int, help="version number (default: next free)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    output.add_argument("--bench-seconds", type=float, default=3.0, help="CPU speed measurement per model file")

    parser = argparse.ArgumentParser(prog="vitrine export", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    for name, text in (
        ("build", "all steps: train, evaluate, convert, quantize, write the model card"),
        ("train", "fine-tune on the catalogue; checkpoints go to the work folder"),
        ("package", "from a trained work folder: evaluate, convert, parity, quantize, card"),
    ):
        step = steps.add_parser(name, help=text, parents=[data] if name == "train" else [data, output])
        step.add_argument("--epochs", type=int, help="override the fine-tuning epochs")
        step.add_argument("--warmup-epochs", type=int, help="override the head warm-up epochs")
        step.add_argument(
            "--backbone",
            choices=list(LITE_VARIANTS),
            help="override the backbone (package with the same one)",
        )
        step.add_argument("--head-lr", type=float, help="override the peak learning rate of the heads")
        step.add_argument("--backbone-lr", type=float, help="override the peak learning rate of the backbone")
        step.add_argument("--init-from", type=Path, help="continue from a checkpoint of an earlier run")
        step.add_argument("--teacher", type=Path, help="distil from this packaged version folder (e.g. the ensemble)")
        step.add_argument("--distill-weight", type=float, help="share of the loss that follows the teacher")
        step.add_argument("--distill-temperature", type=float, help="softening temperature for distillation")
        step.add_argument("--max-int8-drop", type=float, help="override the largest INT8 top-1 loss allowed")
    ensemble = steps.add_parser(
        "ensemble", help="merge packaged versions into one version that averages them", parents=[data, output]
    )
    ensemble.add_argument("--members", type=Path, nargs="+", required=True, help="packaged version folders")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> ExportConfig:
    config = ExportConfig.load(args.config)
    # The options given; each step has its own subset (the ensemble step only the data ones).
    given = {key: value for key, value in vars(args).items() if value is not None}
    for key in TrainConfig.model_fields.keys() & given.keys():  # recipe options: dest = field name
        setattr(config.train, key, given[key])
    if "backbone" in given:
        config.backbone = given["backbone"]
    if "limit" in given:
        config.data.limit = given["limit"]
    if "max_int8_drop" in given:
        config.max_int8_top1_drop = given["max_int8_drop"]
    if "min_class_count" in given:
        config.data.min_class_count = given["min_class_count"]
    return config


def run_train(splits: Splits, config: ExportConfig, work: Path) -> None:
    """Fine-tune and keep the best checkpoint in `work`."""
    model = build_model(splits.train.classes, config, pretrained=config.train.init_from is None)
    if config.train.init_from is not None:
        state = torch.load(config.train.init_from, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])  # strict: same heads and classes as that run
        log.info("continuing from %s (epoch %s)", config.train.init_from, state.get("epoch"))
    result = train(model, splits.train, splits.val, config, work)
    log.info(
        "best epoch %d of %d in %.1f min: %s",
        result.best_epoch,
        len(result.history),
        result.seconds / 60,
        {k: round(v, 4) for k, v in result.best_val.items()},
    )


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
    """Evaluate, export FP32/INT8/FP16 ONNX with parity and accuracy checks, and write the version folder."""
    classes = splits.train.classes
    model = load_trained(work, classes, config)
    folder, version = version_folder(out, version, overwrite=overwrite)
    meta = metadata(config, classes, version, name=out.name)  # the repository folder names the model
    heads = [h.column for h in config.heads]

    temperatures = fit_temperatures(predict(model, splits.val.pixels), splits.val.labels)
    model.set_temperatures(temperatures)
    log.info(
        "softmax temperatures fitted on the validation split: %s", {k: round(v, 3) for k, v in temperatures.items()}
    )
    memory_recipe: dict[str, Any] = {}
    if config.memory is not None:
        memory = fit_memory(model, splits.train, splits.val, config.memory)
        model.memory = memory
        vote = MemoryVote(
            photos=len(splits.train),
            dimensions=memory.dimensions,
            neighbours=memory.k,
            blend={h: w for h, w in memory.blend.items() if w > 0},
        )
        memory_recipe = {**config.memory.model_dump(), **vote.model_dump()}
        meta.memory_vote = vote if vote.blend else None  # with no weight kept the graph has no vote
    log.info("evaluating the PyTorch model on %d test images", len(splits.test))
    evaluate(predict(model, splits.test.pixels), splits.test, folder)

    fp32 = export_onnx(model, meta, folder / FILES["fp32"])
    parity = check_parity(model, fp32, splits.val.pixels[:PARITY_IMAGES], heads)
    log.info(
        "parity on %d validation images: max |logit diff| %.2e, top-1 agreement %s",
        parity.images,
        parity.max_abs_logit_diff,
        parity.top1_agreement,
    )

    rng = np.random.default_rng(config.train.seed)
    count = min(config.calibration_images, len(splits.train))
    calibration = splits.train.pixels[rng.choice(len(splits.train), count, replace=False)]
    quantize_int8(fp32, folder / FILES["int8"], calibration)
    convert_fp16(fp32, folder / FILES["fp16"])
    meta.files = dict(FILES)

    scores = score_files(folder, FILES, {h: h for h in heads}, splits.test, bench_seconds=bench_seconds)
    meta.metrics, speed = scores.metrics, scores.speed
    drops = {h: meta.metrics["fp32"][f"{h}.top1"] - meta.metrics["int8"][f"{h}.top1"] for h in heads}
    log.info("INT8 top-1 change per head (points): %s", {h: round(-100 * d, 2) for h, d in drops.items()})
    worst = max(drops, key=lambda h: drops[h])
    if drops[worst] > config.max_int8_top1_drop:
        raise SystemExit(
            f"INT8 loses {100 * drops[worst]:.2f} points of top-1 on {worst} "
            f"(limit {100 * config.max_int8_top1_drop:.1f})"
        )
    meta.write(folder)

    # One table over all training stages (a continued run has several), epochs numbered per stage.
    history = [{"stage": n, **record} for n, stage in enumerate(stages, 1) for record in stage["history"]]
    data_report = json.loads((work / "data_report.json").read_text())
    (folder / "data_report.json").write_text(json.dumps(data_report, indent=2, ensure_ascii=False))
    recipe = {
        # The recipe of the last training stage as it ran (not this command's defaults).
        **(stages[-1].get("recipe") or config.train.model_dump(mode="json")),
        "heads": ", ".join(heads),
        "softmax_temperature": {k: round(v, 3) for k, v in temperatures.items()},
        **({"memory_vote": memory_recipe} if memory_recipe else {}),
        "cpu_images_per_second_batch32": {k: round(v) for k, v in speed.items()},
    }
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
    log.info("wrote %s", folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export`."""
    argv = sys.argv[1:] if argv is None else argv
    args = _args(argv)
    # onnxruntime's quantiser logs every scale adjustment on the root logger: keep the root at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    config = _config(args)
    torch.manual_seed(config.train.seed)
    work = args.work or Path("runs") / config.name
    splits = prepare(args.data, config, work)
    command = "vitrine export " + shlex.join(argv)
    if args.step == "ensemble":
        build_ensemble(
            args.members,
            splits,
            args.out,
            args.version,
            overwrite=args.overwrite,
            reproduce=command,
            bench_seconds=args.bench_seconds,
        )
        return 0
    if args.step in ("build", "train"):
        run_train(splits, config, work)
        record_lineage(work, command, config.train.init_from, config.train.model_dump(mode="json"))
    if args.step in ("build", "package"):
        stages = read_lineage(work)
        if args.step == "build":
            reproduce = command  # the one command that reproduces the folder
        else:
            steps = [s["command"] or f"# training command not recorded for {work}" for s in stages]
            reproduce = "\n".join([*steps, command])
        package(
            splits,
            config,
            work,
            args.out,
            args.version,
            overwrite=args.overwrite,
            reproduce=reproduce,
            stages=stages,
            bench_seconds=args.bench_seconds,
        )
    return 0

"""`python -m export` / `vitrine export`: build a model version, or run one step of it."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch
from pydantic import ValidationError

from app.schema import ModelMetadata
from export.config import DEFAULT_CONFIG, LITE_VARIANTS, ExportConfig, apply_options
from export.ensemble import build_ensemble, check_not_a_member
from export.explainable import make_explainable
from export.importer import add_import_parser, run_import
from export.packaging import package
from export.palette_fit import fit_palette
from export.pipeline import (
    FILES,
    Int8LossError,
    Splits,
    check_split,
    check_version_free,
    metadata,
    prepare,
    read_lineage,
    record_lineage,
    score_files,
)
from export.recipe import Build, Recipe, run_recipe
from export.steps import (
    calibration_pixels,
    check_fp32,
    check_matches,
    convert_checkpoint,
    evaluate_file,
    int8_drops,
    model_file,
    quantize_files,
)
from export.train import run_train
from export.translations import check_translations

log = logging.getLogger("export")


def _args(argv: list[str]) -> argparse.Namespace:
    # Every step reads the catalogue; the same data options give the same split and classes.
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", type=Path, required=True, help="catalogue export: images (folder/tars) + CSV")
    data.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="heads and recipe (TOML)")
    data.add_argument("--work", type=Path, help="work folder for cache and checkpoints (default runs/<name>)")
    data.add_argument("--limit", type=int, help="use only this many images (smoke runs)")
    data.add_argument("--min-class-count", type=int, help="override the minimum images per class")
    data.add_argument(
        "--train-fraction", type=float, help="train on this share of the training split (learning curves)"
    )
    data.add_argument("--size", type=int, help="override the input size in pixels")
    # Steps that write a version folder.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/product-classifier")
    output.add_argument("--version", type=int, help="version number (default: next free)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    output.add_argument("--bench-seconds", type=float, default=3.0, help="CPU speed measurement per model file")

    parser = argparse.ArgumentParser(prog="vitrine export", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    build = steps.add_parser(
        "build", help="run a config's recipe: its [[stages]] in order, skipping those finished earlier"
    )
    build.add_argument("config", type=Path, nargs="?", default=DEFAULT_CONFIG, help="config with [[stages]] (TOML)")
    build.add_argument("--data", type=Path, required=True, help="catalogue export: images (folder/tars) + CSV")
    build.add_argument("--runs", type=Path, default=Path("runs"), help="work root: a folder per stage, the members")
    build.add_argument("--models", type=Path, default=Path("models"), help="model repository for published versions")
    build.add_argument("--dry-run", action="store_true", help="list the stages that would run, and run none")
    build.add_argument("--bench-seconds", type=float, default=3.0, help="CPU speed measurement per model file")
    # Options over every stage's, for smoke runs on small data.
    build.add_argument("--limit", type=int, help="use only this many images")
    build.add_argument("--min-class-count", type=int, help="override the minimum images per class")
    build.add_argument("--size", type=int, help="override the input size in pixels")
    build.add_argument("--epochs", type=int, help="override every train stage's fine-tuning epochs")
    build.add_argument("--warmup-epochs", type=int, help="override every train stage's head warm-up epochs")
    build.add_argument("--max-int8-drop", type=float, help="override the largest INT8 top-1 loss allowed")
    for name, text in (
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
        step.add_argument("--max-int8-drop", type=float, help="override the largest INT8 top-1 loss allowed")
    ensemble = steps.add_parser(
        "ensemble", help="merge packaged versions into one version that averages them", parents=[data, output]
    )
    ensemble.add_argument("--members", type=Path, nargs="+", required=True, help="packaged version folders")
    ensemble.add_argument("--max-int8-drop", type=float, help="override the largest INT8 top-1 loss allowed")

    # The packaging steps alone: they write into the work folder, never into a model repository.
    convert = steps.add_parser(
        "convert",
        help="from a trained work folder: fit temperatures and memory vote, export FP32 ONNX, check parity",
        parents=[data],
    )
    convert.add_argument("--file", type=Path, help="ONNX file to write (default <work>/convert/model.onnx)")
    convert.add_argument("--backbone", choices=list(LITE_VARIANTS), help="the backbone the work folder trained")
    convert.add_argument("--version", type=int, default=1, help="version number written into the metadata")
    quantize = steps.add_parser(
        "quantize",
        help="INT8 and FP16 files of an FP32 model, with INT8's test accuracy and CPU speed next to FP32's",
        parents=[data],
    )
    quantize.add_argument("--model", type=Path, required=True, help="version folder or FP32 ONNX file")
    quantize.add_argument("--dir", type=Path, help="folder for the new files (default <work>/quantize)")
    quantize.add_argument(
        "--calibration", choices=["minmax", "percentile"], default="minmax", help="how activation ranges are set"
    )
    quantize.add_argument("--float-first-convs", type=int, default=3, help="leading convolutions kept in float")
    quantize.add_argument("--float-last-convs", type=int, default=1, help="trailing convolutions kept in float")
    quantize.add_argument("--max-int8-drop", type=float, help="override the largest INT8 top-1 loss allowed")
    quantize.add_argument("--bench-seconds", type=float, default=3.0, help="CPU speed measurement per model file")
    evaluation = steps.add_parser(
        "evaluate", help="the evaluation report (test or validation split) of a version or ONNX file", parents=[data]
    )
    evaluation.add_argument("--model", type=Path, required=True, help="version folder or ONNX file")
    evaluation.add_argument("--precision", choices=list(FILES), default="int8", help="a version folder's file")
    evaluation.add_argument("--subset", choices=["test", "val"], default="test", help="the split to evaluate on")
    evaluation.add_argument("--report", type=Path, help="report folder (default <work>/evaluation/<model>-<subset>)")
    add_import_parser(steps)
    explainable = steps.add_parser(
        "explainable", help="add class activation map outputs (for /explain) to a version folder's model files"
    )
    explainable.add_argument("folder", type=Path, help="a version folder, e.g. models/product-classifier/4")
    palette = steps.add_parser(
        "palette",
        help="learn the colour names' shades from training photos into a version folder's palette.json",
        parents=[data],
    )
    palette.add_argument("folder", type=Path, help="a version folder, e.g. models/product-classifier/4")
    translations = steps.add_parser(
        "translations", help="check that a version folder's translations.json covers every label of every head"
    )
    translations.add_argument("folder", type=Path, help="a version folder, e.g. models/product-classifier/4")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> ExportConfig:
    config = ExportConfig.load(args.config)
    # The options given; each step has its own subset (the ensemble step only the data ones).
    apply_options(config, {key: value for key, value in vars(args).items() if value is not None})
    return config


def run_convert(splits: Splits, config: ExportConfig, work: Path, path: Path, version: int) -> None:
    """The work folder's best checkpoint as calibrated FP32 ONNX at `path`, parity asserted."""
    meta = metadata(config, splits.train.classes, version)
    converted = convert_checkpoint(splits, config, work, meta, path)
    parity = converted.parity
    print(
        f"wrote {path}: parity on {parity.images} validation images, max |logit diff| {parity.max_abs_logit_diff:.2e}"
    )


def run_quantize(
    splits: Splits, config: ExportConfig, args: argparse.Namespace, work: Path, model: tuple[Path, ModelMetadata]
) -> None:
    """INT8 and FP16 files of a model's FP32 file, scored against it; `Int8LossError` past the limit."""
    fp32, meta = model
    if meta.members:
        raise ValueError(f"{args.model} is an ensemble: quantise its members, then merge them with `ensemble`")
    check_fp32(fp32)
    check_matches(meta, splits.test)
    if args.model.is_dir():
        check_split(args.model, "test", splits.test)
    folder = args.dir or work / "quantize"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "fp32": fp32,
        **quantize_files(
            fp32,
            folder,
            calibration_pixels(splits.train, config),
            method=args.calibration,
            float_first_convs=args.float_first_convs,
            float_last_convs=args.float_last_convs,
        ),
    }
    heads = [h.name for h in meta.heads]
    scores = score_files(paths, {h.name: h.output for h in meta.heads}, splits.test, bench_seconds=args.bench_seconds)
    metrics, speed = scores.metrics, scores.speed
    print("| head | fp32 | int8 | fp16 | int8 change (points) |\n|---|---|---|---|---|")
    for h in heads:
        if any(f"{h}.top1" not in metrics[p] for p in ("fp32", "int8", "fp16")):
            log.warning("head %s: no labelled test image, left out of the table", h)
            continue
        fp32_top1, int8_top1, fp16_top1 = (metrics[p][f"{h}.top1"] for p in ("fp32", "int8", "fp16"))
        print(f"| {h} | {fp32_top1:.4f} | {int8_top1:.4f} | {fp16_top1:.4f} | {100 * (int8_top1 - fp32_top1):+.2f} |")
    print(f"CPU images/s at batch 32: fp32 {speed['fp32']:.0f}, int8 {speed['int8']:.0f}; files in {folder}")
    int8_drops(metrics, heads, config.max_int8_top1_drop)


def run_evaluate(splits: Splits, args: argparse.Namespace, work: Path, model: tuple[Path, ModelMetadata]) -> None:
    """A version's (or ONNX file's) evaluation report on one split, and its top-1 next to the recorded one.

    Versions record test metrics only, so the validation split has nothing to compare with."""
    path, meta = model
    name = f"{meta.name}-v{meta.version}-{args.precision if args.model.is_dir() else path.stem}"
    report = args.report or work / "evaluation" / f"{name}-{args.subset}"
    data = splits.test if args.subset == "test" else splits.val
    if args.model.is_dir():
        check_split(args.model, args.subset, data)
    metrics = evaluate_file(path, meta, data, report)
    recorded = meta.metrics.get(args.precision, {}) if args.model.is_dir() and args.subset == "test" else {}
    print(f"{path} on {len(data)} {args.subset} photos; report in {report}")
    print("| head | top-1 | recorded top-1 | macro F1 | ECE |\n|---|---|---|---|---|")
    for head in meta.heads:
        before = recorded.get(f"{head.name}.top1")
        print(
            f"| {head.name} | {metrics[f'{head.name}.top1']:.4f} | {'-' if before is None else f'{before:.4f}'} "
            f"| {metrics[f'{head.name}.macro_f1']:.4f} | {metrics[f'{head.name}.ece']:.4f} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m export`: 0 when the step finished, 1 when INT8 lost more top-1 than allowed,
    2 when the inputs are wrong (a missing path, data that does not match the model)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _args(argv)
    try:
        if args.step == "import":
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            run_import(args)
        else:
            _run(args, argv)
    except Int8LossError as error:  # the files are written, for a look; the version is not fit to ship
        print(f"vitrine export {args.step}: {error}", file=sys.stderr)
        return 1
    except ValidationError as error:  # a config file or option out of range: its first problem, in one line
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or error.title
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        print(f"vitrine export {args.step}: {where}: {first['msg']}{more}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:  # what the user gave; a traceback would not help
        print(f"vitrine export {args.step}: {error}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, argv: list[str]) -> None:
    # onnxruntime's quantiser logs every scale adjustment on the root logger: keep the root at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    command = "vitrine export " + shlex.join(argv)
    if args.step == "explainable":  # works on a version folder alone: no catalogue, no config
        explain = make_explainable(args.folder).explain
        assert explain is not None
        print(f"{args.folder}: explanation outputs {', '.join(explain.outputs.values())}")
        return
    if args.step == "translations":
        check_translations(args.folder)
        return
    if args.step == "build":
        given = ("limit", "min_class_count", "size", "epochs", "warmup_epochs", "max_int8_drop")
        options = {key: getattr(args, key) for key in given if getattr(args, key) is not None}
        build = Build(args.data, args.runs, args.models, command, options, bench_seconds=args.bench_seconds)
        run_recipe(Recipe.load(args.config), build, dry_run=args.dry_run)
        return
    config = _config(args)
    # The file a quantize or evaluate step reads; its data is prepared at its input size unless --size says.
    model = None
    if args.step in ("quantize", "evaluate"):
        model = model_file(args.model, "fp32" if args.step == "quantize" else args.precision)
        if args.size is None:
            config.train.size = model[1].preprocessing.size
    if args.step == "palette" and args.size is None:
        config.train.size = ModelMetadata.read(args.folder).preprocessing.size
    torch.manual_seed(config.train.seed)
    work = args.work or Path("runs") / config.name
    checkpoint = work / "checkpoints" / "best.pt"
    if args.step in ("package", "convert") and not checkpoint.is_file():  # before decoding the catalogue
        raise FileNotFoundError(
            f"no trained checkpoint at {checkpoint}: run `vitrine export train` with this --work first"
        )
    if args.step in ("package", "ensemble"):  # before decoding and training
        check_version_free(args.out, args.version, overwrite=args.overwrite)
        if args.step == "ensemble":
            check_not_a_member(args.members, args.out, args.version)
    splits = prepare(args.data, config, work)
    if args.step == "palette":
        figures = fit_palette(args.folder, splits.train, splits.val, splits.test)
        print("\n".join(f"{name}: {value:.4g}" for name, value in figures.items()))
        return
    if args.step == "convert":
        run_convert(splits, config, work, args.file or work / "convert" / FILES["fp32"], args.version)
    elif model is not None and args.step == "quantize":
        run_quantize(splits, config, args, work, model)
    elif model is not None and args.step == "evaluate":
        run_evaluate(splits, args, work, model)
    elif args.step == "ensemble":
        build_ensemble(
            args.members,
            splits,
            args.out,
            args.version,
            overwrite=args.overwrite,
            reproduce=command,
            bench_seconds=args.bench_seconds,
            max_int8_drop=config.max_int8_top1_drop,
        )
    if args.step == "train":
        run_train(splits, config, work)
        record_lineage(work, command, config.train.init_from, config.train.model_dump(mode="json"))
    if args.step == "package":
        stages = read_lineage(work)
        steps = [s["command"] or f"# training command not recorded for {work}" for s in stages]
        package(
            splits,
            config,
            work,
            args.out,
            args.version,
            overwrite=args.overwrite,
            reproduce="\n".join([*steps, command]),
            stages=stages,
            bench_seconds=args.bench_seconds,
        )

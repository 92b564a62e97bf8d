"""The export steps (prepare, train, evaluate, convert, quantize, card) over one work folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.runtime import softmax
from app.schema import Head, ModelMetadata, Preprocessing
from export.config import ExportConfig
from export.convert import onnx_outputs
from export.data import Catalogue, check_stratify_column, distribution, fingerprint, load_catalogue, split
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
    """Decode the catalogue (cached in `work`), split it, and write the data report.

    The cache (`catalogue-<size>.npz` with its `catalogue-<size>.json`) is used only while the data (the CSV's
    and the image files' names, sizes and modification times), the data config's decoding options (all but the
    split's) and the head columns are the ones it was made from."""
    work.mkdir(parents=True, exist_ok=True)
    check_stratify_column(config.data, [h.column for h in config.heads])  # before decoding
    cache = work / f"catalogue-{config.train.size}.npz"
    meta = work / f"catalogue-{config.train.size}.json"
    key = fingerprint(data, config.data, [h.column for h in config.heads])
    if cache.exists() and meta.exists():
        saved = json.loads(meta.read_text())
        if saved.get("key") == key:
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
        log.info("the data, data config or heads changed since %s was written: decoding again", cache)
    catalogue = load_catalogue(data, config.heads, config.data, preprocessing(config))
    arrays = {"pixels": catalogue.pixels, **{f"label_{k}": v for k, v in catalogue.labels.items()}}
    meta.unlink(missing_ok=True)  # never a metadata file next to a cache file it does not describe
    np.savez(cache, **arrays)
    meta.write_text(
        json.dumps(
            {
                "key": key,
                "data": str(data.resolve()),
                "config": config.data.model_dump(mode="json"),
                "ids": catalogue.ids,
                "classes": catalogue.classes,
                "report": catalogue.report,
            }
        )
    )
    return _split_and_report(catalogue, config, work)


def ids_digest(ids: list[str]) -> str:
    """A fingerprint of a split part: the SHA-256 of its ids, one per line, in order."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def check_split(version: Path, subset: str, data: Catalogue) -> None:
    """Raise `ValueError` when a version folder's data report says its `subset` ("test" or "val") held other
    photos than `data`: scores on another split could include the model's own training photos. Versions
    packaged before the report recorded it cannot be checked."""
    report = version / "data_report.json"
    recorded = json.loads(report.read_text()).get("split", {}).get(f"{subset}_ids_sha256") if report.exists() else None
    if recorded is None:
        log.info("%s does not record its %s split: cannot check that the data gives the same one", version, subset)
    elif recorded != ids_digest(data.ids):
        raise ValueError(
            f"the {subset} split of this data differs from the one {version} was evaluated on (another catalogue "
            "export, seed or data options?): its photos could include the model's training photos"
        )


def _split_and_report(catalogue: Catalogue, config: ExportConfig, work: Path) -> Splits:
    stratification: dict[str, object] = {}
    train, val, test = split(catalogue, config.data, config.train.seed, info=stratification)
    report = {
        **catalogue.report,
        "split": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "seed": config.train.seed,
            **stratification,
            # Which photos each part holds: `evaluate` and `quantize` check a version's against the data given.
            **{f"{name}_ids_sha256": ids_digest(part.ids) for name, part in (("val", val), ("test", test))},
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
        sizes,
        pretrained=pretrained,
        dropout=config.train.dropout,
        backbone=config.backbone,
    )


def load_trained(work: Path, classes: dict[str, list[str]], config: ExportConfig) -> MultiHeadClassifier:
    """The model with the best checkpoint of a finished training run."""
    model = build_model(classes, config, pretrained=False)
    load_checkpoint(model, work / "checkpoints" / "best.pt", classes, config)
    return model.eval()


def checkpoint(model: MultiHeadClassifier, classes: dict[str, list[str]], config: ExportConfig) -> dict[str, Any]:
    """What a checkpoint holds besides the epoch record: the weights, each head's class list and the backbone."""
    return {
        "state_dict": model.state_dict(),
        "classes": {name: list(classes[name]) for name in model.head_names},
        "backbone": config.backbone,
    }


def load_checkpoint(
    model: MultiHeadClassifier, path: Path, classes: dict[str, list[str]], config: ExportConfig
) -> dict[str, Any]:
    """Load a training checkpoint into `model` and return it.

    Raises `ValueError` when the checkpoint was trained with another backbone or other class lists than the
    data's (each head's, in order), or does not fit the model. A checkpoint that records no class lists
    (written before they were saved) is loaded with a warning: its labels cannot be checked."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    backbone = state.get("backbone")
    if backbone is not None and backbone != config.backbone:
        raise ValueError(f"{path} was trained with --backbone {backbone}; this run builds {config.backbone}")
    saved = state.get("classes")
    if saved is None:
        log.warning("%s records no class lists: cannot check that its outputs mean the data's classes", path)
    else:
        for head in [h.column for h in config.heads]:
            if head not in saved:
                raise ValueError(f"{path} has no head {head} (it has {', '.join(saved)}): another config?")
            theirs, mine = list(saved[head]), classes[head]
            if theirs != mine:
                # The first position where they differ; a list that ends early has "nothing" there.
                named = zip_longest(map(repr, theirs), map(repr, mine), fillvalue="nothing")
                i, (trained, ours) = next((k, pair) for k, pair in enumerate(named) if pair[0] != pair[1])
                raise ValueError(
                    f"{path}: head {head}: class {i + 1} is {trained} in the checkpoint but {ours} in the data "
                    f"({len(theirs)} vs {len(mine)} classes; another catalogue, config or --min-class-count?)"
                )
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ValueError(
            f"{path} does not fit the model of this run ({config.backbone}, heads of the config, classes left by "
            f"--min-class-count): pass the --backbone, --config and --min-class-count it was trained with "
            f"({detail[:200]})"
        ) from error
    return state


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


class Int8LossError(ValueError):
    """INT8 loses more top-1 than the configured limit on some head (the files are written, for a look)."""


def check_version_free(model_dir: Path, version: int | None, *, overwrite: bool) -> None:
    """Raise `ValueError` when `version` is given, exists and is not to be overwritten."""
    if version is not None and not overwrite and (model_dir / str(version)).exists():
        raise ValueError(f"{model_dir / str(version)} exists; pass --overwrite or another --version")


@contextmanager
def version_folder(model_dir: Path, version: int | None, *, overwrite: bool) -> Iterator[tuple[Path, int]]:
    """A folder to build a version in, swapped in as `model_dir/<version>` once the block succeeds.

    The files are written into a hidden sibling (`.<version>.new-*`); an existing version is replaced only
    after success (renamed aside, the new one renamed in, the old one removed), so a failed build leaves it
    as it was. When INT8 loses too much (`Int8LossError`) the files stay for a look: in the version folder if
    it is new, else (keeping the old version) in the hidden sibling."""
    version = version or next_version(model_dir)
    check_version_free(model_dir, version, overwrite=overwrite)
    folder = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.new-", dir=model_dir))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the service user must read it
    try:
        yield staging, version
    except Int8LossError:
        if folder.exists():
            log.warning("%s kept as it was; the rejected files are in %s", folder, staging)
        else:
            staging.rename(folder)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = staging.with_name(f".{version}.old-{staging.name.rsplit('-', 1)[-1]}")
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)

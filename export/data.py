"""Read a labelled catalogue export (images in a folder or tar files, plus a CSV) into memory."""

from __future__ import annotations

import csv
import logging
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from app.errors import ImageError
from app.preprocess import decode
from app.schema import Preprocessing
from export.config import DataConfig, HeadSpec

log = logging.getLogger(__name__)

IGNORE = -100  # label value for "no usable label for this head" (torch's CrossEntropyLoss ignore_index)


@dataclass
class Catalogue:
    """Decoded images (N, S, S, 3 uint8), integer labels per head, and what was skipped on the way."""

    ids: list[str]
    pixels: np.ndarray
    labels: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    report: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> Catalogue:
        """The rows at `index`, sharing class lists."""
        return Catalogue(
            ids=[self.ids[i] for i in index],
            pixels=self.pixels[index],
            labels={k: v[index] for k, v in self.labels.items()},
            classes=self.classes,
        )


def read_labels(csv_path: Path, id_column: str, columns: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Rows keyed by id; rows without an id or with an empty required column are returned as problems."""
    rows: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in [id_column, *columns] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing}")
        for line, row in enumerate(reader, start=2):
            key = (row.get(id_column) or "").strip()
            empty = [c for c in columns if not (row.get(c) or "").strip()]
            if not key or empty:
                problems.append(f"line {line}: {'no id' if not key else 'empty ' + ', '.join(empty)}")
                continue
            if key in rows:
                problems.append(f"line {line}: duplicate id {key}")
                continue
            rows[key] = {c: row[c].strip() for c in columns}
    return rows, problems


def iter_images(images: Path, extension: str) -> Iterator[tuple[str, bytes]]:
    """(id, bytes) for every image in a folder, a tar file, or a folder of tar files."""
    if images.is_file():
        tars = [images]
    else:
        tars = sorted(p for p in images.iterdir() if p.suffix == ".tar" or p.name.endswith((".tar.gz", ".tgz")))
    for tar_path in tars:
        with tarfile.open(tar_path) as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(extension):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield Path(member.name).name[: -len(extension)], handle.read()
    if images.is_dir():
        for path in sorted(images.rglob(f"*{extension}")):
            yield path.name[: -len(extension)], path.read_bytes()


def find_csv(data: Path) -> Path:
    """The labels CSV of an export folder (`labels.csv`, else the only CSV)."""
    if data.is_file():
        return data
    if (data / "labels.csv").exists():
        return data / "labels.csv"
    found = sorted(data.glob("*.csv"))
    if len(found) != 1:
        raise FileNotFoundError(f"{data}: expected labels.csv or exactly one CSV, found {len(found)}")
    return found[0]


def load_catalogue(
    data: Path, heads: list[HeadSpec], config: DataConfig, spec: Preprocessing, *, csv_path: Path | None = None
) -> Catalogue:
    """Decode every labelled image; report missing and undecodable ones; mask classes below the minimum count."""
    columns = [h.column for h in heads]
    rows, problems = read_labels(csv_path or find_csv(data), config.id_column, columns)
    wanted = set(rows)
    if config.limit is not None:
        wanted = set(sorted(rows, key=_id_key)[: config.limit])
    pixels: dict[str, np.ndarray] = {}
    undecodable: list[str] = []
    unlabelled = 0
    for image_id, blob in iter_images(data if data.is_dir() else data.parent, config.image_extension):
        if image_id not in wanted:
            unlabelled += image_id not in rows
            continue
        try:
            pixels[image_id] = decode(blob, spec)
        except ImageError as exc:
            undecodable.append(f"{image_id}: {exc.message}")
    missing = sorted(wanted - set(pixels) - {u.split(":")[0] for u in undecodable}, key=_id_key)
    ids = sorted(pixels, key=_id_key)
    if not ids:
        raise ValueError(f"{data}: no labelled image could be read")
    labels: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    masked: dict[str, dict[str, int]] = {}
    for head in heads:
        counts = Counter(rows[i][head.column] for i in ids)
        kept = sorted(c for c, n in counts.items() if n >= config.min_class_count)
        masked[head.column] = {c: n for c, n in sorted(counts.items()) if n < config.min_class_count}
        index = {c: k for k, c in enumerate(kept)}
        labels[head.column] = np.array([index.get(rows[i][head.column], IGNORE) for i in ids], dtype=np.int64)
        classes[head.column] = kept
    report: dict[str, object] = {
        "images": len(ids),
        "csv_problems": problems,
        "missing_images": missing,
        "undecodable_images": undecodable,
        "images_without_label_row": unlabelled,
        "masked_classes": masked,
    }
    for name, items in (("CSV problems", problems), ("missing images", missing), ("undecodable images", undecodable)):
        if items:
            log.warning("%d %s (first: %s)", len(items), name, items[0])
    return Catalogue(ids=ids, pixels=np.stack([pixels[i] for i in ids]), labels=labels, classes=classes, report=report)


def split(catalogue: Catalogue, config: DataConfig, seed: int) -> tuple[Catalogue, Catalogue, Catalogue]:
    """Seeded train/validation/test split, stratified on one column where every class allows it."""
    index = np.arange(len(catalogue))
    strat = catalogue.labels.get(config.stratify_column)
    if strat is not None and min(Counter(strat.tolist()).values()) < 3:
        strat = None  # too few rows per class to stratify (tiny smoke data)
    holdout = config.val_fraction + config.test_fraction
    if strat is not None and len(index) * min(config.val_fraction, config.test_fraction) < len(set(strat.tolist())):
        strat = None  # a split smaller than the number of classes cannot hold one of each
    train_idx, rest = train_test_split(index, test_size=holdout, random_state=seed, stratify=strat)
    rest_strat = strat[rest] if strat is not None else None
    if rest_strat is not None and (
        min(Counter(rest_strat.tolist()).values()) < 2
        or len(rest) * config.test_fraction / holdout < len(set(rest_strat.tolist()))
    ):
        rest_strat = None
    val_idx, test_idx = train_test_split(
        rest, test_size=config.test_fraction / holdout, random_state=seed, stratify=rest_strat
    )
    return catalogue.subset(np.sort(train_idx)), catalogue.subset(np.sort(val_idx)), catalogue.subset(np.sort(test_idx))


def distribution(catalogue: Catalogue) -> dict[str, dict[str, int]]:
    """Images per class per head (masked labels counted as `<masked>`)."""
    out: dict[str, dict[str, int]] = {}
    for column, values in catalogue.labels.items():
        counts = Counter(values.tolist())
        names = catalogue.classes[column]
        out[column] = {(names[k] if k != IGNORE else "<masked>"): n for k, n in counts.most_common()}
    return out


def _id_key(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (0, value)

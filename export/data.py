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
    """Rows keyed by id. Rows without an id or without any label are dropped; an empty cell in a row with other
    labels is kept as "" (no label for that head: the photo still trains and scores the others). Both are
    returned as problems.

    UTF-8 with or without a byte order mark; whitespace around the header names is ignored."""
    rows: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    line = 1
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in [id_column, *columns] if c not in reader.fieldnames]
            if missing:
                raise ValueError(f"{csv_path}: missing columns {missing}")
            for line, row in enumerate(reader, start=2):
                key = (row.get(id_column) or "").strip()
                empty = [c for c in columns if not (row.get(c) or "").strip()]
                if not key or len(empty) == len(columns):
                    problems.append(f"line {line}: {'no id' if not key else 'no labels'}")
                    continue
                if key in rows:
                    problems.append(f"line {line}: duplicate id {key}")
                    continue
                if empty:
                    problems.append(f"line {line}: empty {', '.join(empty)} (no label for that head, the others kept)")
                rows[key] = {c: (row[c] or "").strip() for c in columns}
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path}: not UTF-8 text ({exc}); save it as UTF-8") from exc
    except csv.Error as exc:
        raise ValueError(f"{csv_path}: unreadable CSV after line {line}: {exc}") from exc
    return rows, problems


def is_tar(path: Path) -> bool:
    """Whether `path` is named like a tar file (`.tar`, `.tar.gz`, `.tgz`)."""
    return path.suffix == ".tar" or path.name.endswith((".tar.gz", ".tgz"))


def iter_images(images: Path, extension: str, unreadable: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(id, bytes) for every image in a folder, a tar file, or a folder of tar files.

    A tar file that cannot be read (truncated, not a tar) is noted in `unreadable` and skipped after the images
    read from it so far; without `unreadable` the error is raised. The extension matches in any case (`.JPG`)."""
    suffix = extension.lower()
    tars = [images] if images.is_file() else sorted(p for p in images.iterdir() if is_tar(p))
    for tar_path in tars:
        try:
            with tarfile.open(tar_path) as archive:
                for member in archive:
                    if member.isfile() and member.name.lower().endswith(suffix):
                        handle = archive.extractfile(member)
                        if handle is not None:
                            yield Path(member.name).name[: -len(extension)], handle.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            if unreadable is None:
                raise
            unreadable.append(f"{tar_path.name}: {' '.join(str(exc).split()) or type(exc).__name__}")
    if images.is_dir():
        for path in image_files(images, extension):
            yield path.name[: -len(extension)], path.read_bytes()


def image_files(folder: Path, extension: str) -> list[Path]:
    """The image files under `folder` (any depth), their extension matched in any case."""
    suffix = extension.lower()
    return sorted(p for p in folder.rglob("*") if p.name.lower().endswith(suffix) and p.is_file())


def image_source(data: Path) -> Path:
    """Where the images of `--data` are: the folder itself, a tar file itself, or the folder of a given CSV."""
    return data if data.is_dir() or is_tar(data) else data.parent


def find_csv(data: Path) -> Path:
    """The labels CSV of an export folder (`labels.csv`, else the only CSV); a tar file's is beside it."""
    if data.is_file() and not is_tar(data):
        return data
    folder = data.parent if data.is_file() else data
    if (folder / "labels.csv").exists():
        return folder / "labels.csv"
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected labels.csv or exactly one CSV, found {len(found)}")
    return found[0]


# DataConfig fields only `split` reads: a decoded catalogue does not depend on them.
SPLIT_OPTIONS = {"stratify_column", "val_fraction", "test_fraction", "train_fraction"}


def fingerprint(data: Path, config: DataConfig, columns: list[str]) -> dict[str, object]:
    """What a decoded catalogue depends on besides the preprocessing: the CSV's and the image sources' names,
    sizes and modification times, the data config's options other than the split's, and the label columns (a
    cache key)."""

    def stat(path: Path) -> list[object]:
        info = path.stat()
        return [str(path.relative_to(source)) if path != source else path.name, info.st_size, info.st_mtime_ns]

    csv_path = find_csv(data)
    source = image_source(data)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and is_tar(p))
        files += image_files(source, config.image_extension)
    else:
        files = [source]
    csv_info = csv_path.stat()
    return {
        "data": str(data.resolve()),
        "csv": [str(csv_path.resolve()), csv_info.st_size, csv_info.st_mtime_ns],
        "images": [stat(p) for p in files],
        "config": config.model_dump(mode="json", exclude=SPLIT_OPTIONS),
        "columns": columns,
    }


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
    unreadable: list[str] = []
    unlabelled = 0
    duplicates: list[str] = []
    seen: set[str] = set()
    for image_id, blob in iter_images(image_source(data), config.image_extension, unreadable):
        if image_id not in wanted:
            unlabelled += image_id not in rows
            continue
        if image_id in seen:
            duplicates.append(image_id)  # the same name in two folders or tars: the first one is kept
            continue
        seen.add(image_id)
        try:
            pixels[image_id] = decode(blob, spec)
        except ImageError as exc:
            undecodable.append(f"{image_id}: {exc.message}")
    missing = sorted(wanted - set(pixels) - {u.split(":")[0] for u in undecodable}, key=_id_key)
    ids = sorted(pixels, key=_id_key)
    if not ids:
        unread = f" ({len(unreadable)} unreadable tar file(s), first: {unreadable[0]})" if unreadable else ""
        raise ValueError(f"{data}: no labelled image could be read{unread}")
    labels: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    masked: dict[str, dict[str, int]] = {}
    unlabelled_cells: dict[str, int] = {}
    for head in heads:
        counts = Counter(rows[i][head.column] for i in ids)
        unlabelled_cells[head.column] = counts.pop("", 0)  # empty cells: IGNORE below, like masked classes
        kept = sorted(c for c, n in counts.items() if n >= config.min_class_count)
        masked[head.column] = {c: n for c, n in sorted(counts.items()) if n < config.min_class_count}
        if len(kept) < 2:
            raise ValueError(
                f"head {head.column}: {len(kept)} class(es) with at least min_class_count={config.min_class_count} "
                f"images ({len(counts)} in the data): a head needs 2 (lower --min-class-count or drop the head)"
            )
        index = {c: k for k, c in enumerate(kept)}
        labels[head.column] = np.array([index.get(rows[i][head.column], IGNORE) for i in ids], dtype=np.int64)
        classes[head.column] = kept
    report: dict[str, object] = {
        "images": len(ids),
        "csv_problems": problems,
        "missing_images": missing,
        "undecodable_images": undecodable,
        "unreadable_archives": unreadable,
        "duplicate_images": duplicates,
        "images_without_label_row": unlabelled,
        "masked_classes": masked,
        "empty_label_cells": unlabelled_cells,
    }
    for name, items in (
        ("CSV problems", problems),
        ("missing images", missing),
        ("undecodable images", undecodable),
        ("unreadable tar files", unreadable),
        ("duplicate image names (the first kept)", duplicates),
    ):
        if items:
            log.warning("%d %s (first: %s)", len(items), name, items[0])
    return Catalogue(ids=ids, pixels=np.stack([pixels[i] for i in ids]), labels=labels, classes=classes, report=report)


def _merge_rare(strata: np.ndarray, minimum: int) -> tuple[np.ndarray | None, int]:
    """Strata with fewer than `minimum` rows merged into one; if that one is still too small, into the smallest
    other stratum. Returns the strata (None if nothing can be stratified) and how many were merged."""
    counts = Counter(strata.tolist())
    rare = sorted(c for c, n in counts.items() if n < minimum)
    if not rare:
        return strata, 0
    others = {c: n for c, n in counts.items() if n >= minimum}
    merged = min(counts) - 1  # a value no stratum has
    if sum(counts[c] for c in rare) < minimum:
        if not others:
            return None, len(rare)
        merged = min(others, key=lambda c: (others[c], c))
    return np.where(np.isin(strata, rare), merged, strata), len(rare)


def _if_each_fits(strata: np.ndarray | None, smallest_part: float) -> np.ndarray | None:
    """`strata`, or None when the smallest part of a split (`smallest_part` rows) cannot hold one row of each."""
    return None if strata is None or smallest_part < len(set(strata.tolist())) else strata


def _part_strata(strata: np.ndarray | None, rows: np.ndarray, smallest_share: float) -> np.ndarray | None:
    """The strata for splitting `rows` again (those with fewer than 2 of them merged), or None when the smaller
    part, `smallest_share` of the rows, cannot hold one of each."""
    merged = _merge_rare(strata[rows], 2)[0] if strata is not None else None
    return _if_each_fits(merged, len(rows) * smallest_share)


def check_stratify_column(config: DataConfig, heads: list[str]) -> None:
    """Raise `ValueError` unless the configured stratify column is one of the heads."""
    if config.stratify_column not in heads:
        raise ValueError(f"stratify_column {config.stratify_column!r} is not a head (heads: {', '.join(heads)})")


def split(
    catalogue: Catalogue, config: DataConfig, seed: int, *, info: dict[str, object] | None = None
) -> tuple[Catalogue, Catalogue, Catalogue]:
    """Seeded train/validation/test split, stratified on one head's labels.

    Strata (classes) with fewer than 3 images are merged into one rare stratum (for the validation/test split,
    those with fewer than 2); a split too small to hold one image of each stratum is not stratified. With
    `config.train_fraction` below 1 the training part is a seeded, stratified share of the full one, and the
    validation and test parts are the same photos as without it. `info`, if given, receives the stratification
    actually used."""
    column = config.stratify_column
    check_stratify_column(config, list(catalogue.labels))
    index = np.arange(len(catalogue))
    holdout = config.val_fraction + config.test_fraction
    strat, rare = _merge_rare(catalogue.labels[column], 3)
    strat = _if_each_fits(strat, len(index) * min(config.val_fraction, config.test_fraction))
    train_idx, rest = train_test_split(index, test_size=holdout, random_state=seed, stratify=strat)
    rest_strat = _part_strata(strat, rest, config.test_fraction / holdout)
    val_idx, test_idx = train_test_split(
        rest, test_size=config.test_fraction / holdout, random_state=seed, stratify=rest_strat
    )
    if config.train_fraction < 1.0:  # a share of the same training split: validation and test do not move
        kept = config.train_fraction
        train_strat = _part_strata(strat, train_idx, min(kept, 1 - kept))
        train_idx = train_test_split(train_idx, train_size=kept, random_state=seed, stratify=train_strat)[0]
    if info is not None:
        info["stratified_on"] = column if strat is not None else None
        info["stratified_val_test"] = rest_strat is not None
        info["rare_strata_merged"] = rare  # classes with fewer than 3 images
        info["train_fraction"] = config.train_fraction
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

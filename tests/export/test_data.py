"""Reading a catalogue export: folders and tars, bad CSV rows, missing and undecodable images, splits."""

from __future__ import annotations

import shutil
import tarfile
from collections import Counter
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from app.schema import Preprocessing
from export.config import DataConfig, HeadSpec
from export.data import IGNORE, Catalogue, load_catalogue, read_labels, split
from tests.conftest import CATALOGUE

HEADS = [
    HeadSpec(column="articleType", key="article", role="category", level="article"),
    HeadSpec(column="baseColour", key="colour"),
]
SPEC = Preprocessing(size=32)


def copy_catalogue(target: Path, *, as_tar: bool) -> Path:
    target.mkdir(parents=True)
    shutil.copy(CATALOGUE / "labels.csv", target / "labels.csv")
    images = sorted(CATALOGUE.glob("*.jpg"))
    if as_tar:
        for part, chunk in enumerate((images[:24], images[24:])):
            with tarfile.open(target / f"images-{part:03d}.tar", "w") as archive:
                for path in chunk:
                    archive.add(path, arcname=path.name)
    else:
        for path in images:
            shutil.copy(path, target / path.name)
    return target


@pytest.mark.parametrize("as_tar", [False, True])
def test_folder_and_tar_exports_read_the_same(tmp_path: Path, as_tar: bool) -> None:
    data = copy_catalogue(tmp_path / "export", as_tar=as_tar)
    catalogue = load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)
    assert len(catalogue) == 48 and catalogue.pixels.shape == (48, 32, 32, 3)
    assert "Tshirts" in catalogue.classes["articleType"]
    assert (catalogue.labels["articleType"] >= 0).all()
    assert catalogue.report["missing_images"] == [] and catalogue.report["undecodable_images"] == []


def test_bad_rows_missing_and_undecodable_images_are_reported(tmp_path: Path) -> None:
    data = copy_catalogue(tmp_path / "export", as_tar=False)
    with (data / "labels.csv").open("a") as handle:
        handle.write("999999,Men,Apparel,Topwear,Tshirts,Black,Summer,2012,Casual,Missing shirt\n")
        handle.write(",Men,Apparel,Topwear,Tshirts,Black,Summer,2012,Casual,No id\n")
        handle.write("888888,Men,Apparel,Topwear,,Black,Summer,2012,Casual,No type\n")
    broken = sorted(data.glob("*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")
    catalogue = load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)
    report = catalogue.report
    assert report["missing_images"] == ["888888", "999999"]  # 888888's row is kept for its other labels
    assert [u.split(":")[0] for u in cast(list[str], report["undecodable_images"])] == [broken.stem]
    assert len(cast(list[str], report["csv_problems"])) == 2  # no id; empty articleType
    assert len(catalogue) == 47


def test_an_empty_label_cell_masks_that_head_only(tmp_path: Path) -> None:
    """A catalogue row with one label missing still trains and scores the other heads (it was dropped whole)."""
    data = copy_catalogue(tmp_path / "export", as_tar=False)
    text = (data / "labels.csv").read_text()
    text = text.replace("3356,Men,Apparel,Topwear,Tshirts,Black,", "3356,Men,Apparel,Topwear,Tshirts,,")
    text = text.replace("4069,Men,Footwear,Shoes,Casual Shoes,Brown,", "4069,,,,,,")  # no label of any head
    (data / "labels.csv").write_text(text)
    columns = [h.column for h in HEADS]
    catalogue = load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)
    assert "4069" not in catalogue.ids and len(catalogue) == 47
    row = catalogue.ids.index("3356")
    labels = {c: catalogue.classes[c][k] if (k := int(catalogue.labels[c][row])) != IGNORE else None for c in columns}
    assert labels["baseColour"] is None and labels["articleType"] == "Tshirts"
    assert "" not in catalogue.classes["baseColour"]
    empty = cast(dict[str, int], catalogue.report["empty_label_cells"])
    assert empty["baseColour"] == 1 and empty["articleType"] == 0
    problems = cast(list[str], catalogue.report["csv_problems"])
    assert any("empty baseColour" in p for p in problems) and any("no labels" in p for p in problems)


def test_rare_classes_are_masked_not_dropped(tmp_path: Path) -> None:
    catalogue = load_catalogue(CATALOGUE, HEADS, DataConfig(min_class_count=3), SPEC)
    colours = catalogue.report["masked_classes"]["baseColour"]  # type: ignore[index]
    assert colours and all(n < 3 for n in colours.values())
    assert (catalogue.labels["baseColour"] == IGNORE).sum() == sum(colours.values())
    assert len(catalogue) == 48  # the images still train the other heads


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("id,colour\n1,Red\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_labels(tmp_path / "labels.csv", "id", ["articleType"])


def test_split_is_seeded_disjoint_and_complete() -> None:
    catalogue = load_catalogue(CATALOGUE, HEADS, DataConfig(min_class_count=1), SPEC)
    config = DataConfig(val_fraction=0.25, test_fraction=0.25, min_class_count=1)
    first = split(catalogue, config, seed=1)
    again = split(catalogue, config, seed=1)
    ids = [set(part.ids) for part in first]
    assert [p.ids for p in first] == [p.ids for p in again]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 48
    # 4 images per article type: stratification puts each type in the training split.
    assert set(np.unique(first[0].labels["articleType"])) == set(range(12))


def test_a_train_fraction_keeps_validation_and_test_and_trains_on_a_seeded_share() -> None:
    catalogue = load_catalogue(CATALOGUE, HEADS, DataConfig(min_class_count=1), SPEC)
    full = split(catalogue, DataConfig(val_fraction=0.25, test_fraction=0.25, min_class_count=1), seed=1)
    config = DataConfig(val_fraction=0.25, test_fraction=0.25, min_class_count=1, train_fraction=0.5)
    info: dict[str, object] = {}
    half = split(catalogue, config, seed=1, info=info)
    assert [p.ids for p in half[1:]] == [p.ids for p in full[1:]]
    assert set(half[0].ids) < set(full[0].ids) and len(half[0]) == len(full[0]) // 2
    assert half[0].ids == split(catalogue, config, seed=1)[0].ids
    assert info["train_fraction"] == 0.5


@pytest.mark.parametrize("min_count, single", [(1000, False), (1, True)])
def test_a_head_left_with_one_class_is_refused_before_training(tmp_path: Path, min_count: int, single: bool) -> None:
    data = copy_catalogue(tmp_path / "export", as_tar=False)
    if single:  # every photo the same colour
        header, *rows = (data / "labels.csv").read_text().splitlines()
        rows = [",".join([*c[:5], "Black", *c[6:]]) for c in (row.split(",") for row in rows)]
        (data / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    head = "baseColour" if single else "articleType"
    with pytest.raises(ValueError, match=rf"head {head}: [01] class\(es\) .*min_class_count={min_count}"):
        load_catalogue(data, HEADS, DataConfig(min_class_count=min_count), SPEC)


def test_unreadable_tar_files_are_reported_not_fatal(tmp_path: Path) -> None:
    data = copy_catalogue(tmp_path / "export", as_tar=True)
    first = data / "images-000.tar"
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    (data / "junk.tar").write_bytes(b"hello")  # not a tar
    catalogue = load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)
    unreadable = cast(list[str], catalogue.report["unreadable_archives"])
    assert [u.split(":")[0] for u in unreadable] == ["images-000.tar", "junk.tar"]
    assert all("\n" not in u for u in unreadable)
    assert 24 <= len(catalogue) < 48  # the second tar, and what the truncated one held before the cut
    assert len(cast(list[str], catalogue.report["missing_images"])) == 48 - len(catalogue)
    (data / "images-001.tar").unlink()
    first.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no labelled image could be read .*unreadable tar"):
        load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)


def test_csv_with_byte_order_mark_and_spaced_headers_reads(tmp_path: Path) -> None:
    text = (CATALOGUE / "labels.csv").read_text()
    header, rest = text.split("\n", 1)
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (" , ".join(header.split(",")) + "\n" + rest).encode())
    rows, problems = read_labels(tmp_path / "labels.csv", "id", ["articleType", "baseColour"])
    assert len(rows) == 48 and not problems and rows["3356"]["articleType"] == "Tshirts"
    (tmp_path / "latin1.csv").write_bytes(text.replace("Myntra", "Caf\xe9").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text"):
        read_labels(tmp_path / "latin1.csv", "id", ["articleType"])


def test_data_may_be_a_tar_file_with_the_csv_beside_it(tmp_path: Path) -> None:
    data = copy_catalogue(tmp_path / "export", as_tar=True)
    (data / "images-001.tar").rename(tmp_path / "other.tar")  # only this tar's images are read
    catalogue = load_catalogue(data / "images-000.tar", HEADS, DataConfig(min_class_count=1), SPEC)
    assert len(catalogue) == 24 and len(cast(list[str], catalogue.report["missing_images"])) == 24


def catalogue_of(labels: list[int]) -> Catalogue:
    n = len(labels)
    return Catalogue(
        ids=[str(i) for i in range(n)],
        pixels=np.zeros((n, 1, 1, 3), np.uint8),
        labels={"articleType": np.array(labels)},
        classes={"articleType": [str(i) for i in range(20)]},
    )


@pytest.mark.parametrize("extra, rare", [([], 0), ([IGNORE], 1), ([IGNORE, IGNORE, 19, 20, 21, 21], 3)])
def test_rare_strata_are_merged_not_the_stratification_dropped(extra: list[int], rare: int) -> None:
    labels = [c for c in range(20) for _ in range(50)] + extra  # 20 classes of 50, a few rare ones
    info: dict[str, object] = {}
    _, _, test = split(catalogue_of(labels), DataConfig(), 1234, info=info)
    per_class = Counter(test.labels["articleType"].tolist())
    assert all(4 <= per_class[c] <= 6 for c in range(20)), per_class
    assert info == {
        "stratified_on": "articleType",
        "stratified_val_test": True,
        "rare_strata_merged": rare,
        "train_fraction": 1.0,
    }


def test_stratify_column_must_be_a_head() -> None:
    with pytest.raises(ValueError, match="stratify_column 'articletype' is not a head"):
        split(catalogue_of([0, 1] * 20), DataConfig(stratify_column="articletype"), 1)


@pytest.mark.parametrize("as_tar", [False, True])
def test_upper_case_extensions_are_read_and_duplicate_names_reported(tmp_path: Path, as_tar: bool) -> None:
    """`.JPG` files are images too; the same name twice (two folders, two tars) keeps the first and says so."""
    data = copy_catalogue(tmp_path / "export", as_tar=False)
    photos = sorted(data.glob("*.jpg"))
    for photo in photos[:10]:
        photo.rename(photo.with_suffix(".JPG"))
    (data / "again").mkdir()
    shutil.copy(photos[20], data / "again" / photos[20].name)
    if as_tar:
        with tarfile.open(data / "images.tar", "w") as archive:
            for path in sorted(data.rglob("*")):
                if path.is_file() and path.suffix.lower() == ".jpg":
                    archive.add(path, arcname=str(path.relative_to(data)))
                    path.unlink()
    catalogue = load_catalogue(data, HEADS, DataConfig(min_class_count=1), SPEC)
    assert len(catalogue) == 48 and catalogue.report["missing_images"] == []
    assert catalogue.report["duplicate_images"] == [photos[20].stem]

"""Reading a catalogue export: folders and tars, bad CSV rows, missing and undecodable images, splits."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from app.schema import Preprocessing
from export.config import DataConfig, HeadSpec
from export.data import IGNORE, load_catalogue, read_labels, split
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
    assert report["missing_images"] == ["999999"]
    assert [u.split(":")[0] for u in cast(list[str], report["undecodable_images"])] == [broken.stem]
    assert len(cast(list[str], report["csv_problems"])) == 2
    assert len(catalogue) == 47


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

"""The export pipeline refuses wrong inputs early and with one line, and never loses or mislabels a version."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from app.preprocess import decode
from app.schema import Preprocessing
from export.cli import main
from export.config import ExportConfig, HeadSpec
from export.pipeline import load_trained, prepare, version_folder
from tests.conftest import CATALOGUE

SMOKE = ["--size", "32", "--min-class-count", "2"]


def copy_catalogue(target: Path, rename: dict[str, str] | None = None, column: str = "subCategory") -> Path:
    """The committed catalogue, with the classes of one column renamed."""
    target.mkdir(parents=True)
    for photo in CATALOGUE.glob("*.jpg"):
        shutil.copy(photo, target / photo.name)
    with (CATALOGUE / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row[column] = (rename or {}).get(row[column], row[column])
    with (target / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder trained for one epoch on the committed catalogue."""
    work = tmp_path_factory.mktemp("trained")
    code = main(
        ["train", "--data", str(CATALOGUE), "--work", str(work), *SMOKE, "--epochs", "1", "--warmup-epochs", "0"]
    )
    assert code == 0
    return work


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_checkpoints_record_their_classes_and_a_renamed_class_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same number of classes per head, one of them renamed: the outputs would be relabelled silently.
    renamed = copy_catalogue(tmp_path / "renamed", {"Topwear": "Tops"})
    work = tmp_path / "work"
    shutil.copytree(trained / "checkpoints", work / "checkpoints")
    assert main(["convert", "--data", str(renamed), "--work", str(work), *SMOKE]) == 2
    err = one_line_error(capsys)
    assert "head subCategory: class" in err and "'Topwear' in the checkpoint but 'Tops' in the data" in err
    init = ["--init-from", str(trained / "checkpoints" / "best.pt"), "--epochs", "1", "--warmup-epochs", "0"]
    assert main(["train", "--data", str(renamed), "--work", str(tmp_path / "w2"), *SMOKE, *init]) == 2
    assert "head subCategory: class" in one_line_error(capsys)
    assert not (tmp_path / "w2" / "checkpoints").exists()
    state = torch.load(trained / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert state["backbone"] == "efficientnet-lite0" and "Topwear" in state["classes"]["subCategory"]
    assert torch.load(trained / "checkpoints" / "last.pt", weights_only=True)["classes"] == state["classes"]


def test_a_checkpoint_without_class_lists_loads_with_a_warning(
    trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = torch.load(trained / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    old = {"state_dict": state["state_dict"], "epoch": state["epoch"], "val": state["val"]}
    (tmp_path / "checkpoints").mkdir()
    torch.save(old, tmp_path / "checkpoints" / "best.pt")
    config = ExportConfig.load()
    classes = {h: list(c) for h, c in state["classes"].items()}
    with caplog.at_level(logging.WARNING, logger="export.pipeline"):
        load_trained(tmp_path, classes, config)
    assert "records no class lists" in caplog.text


@pytest.mark.parametrize(
    "option, named", [(["--backbone", "efficientnet-lite1"], "--backbone"), (["--min-class-count", "1"], "head")]
)
@pytest.mark.parametrize("recorded", [True, False])
def test_a_checkpoint_of_another_backbone_or_class_count_is_an_input_error(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: list[str],
    named: str,
    recorded: bool,
) -> None:
    checkpoint = trained / "checkpoints" / "best.pt"
    if not recorded:  # written before checkpoints recorded classes and backbone: the weights do not fit
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        checkpoint = tmp_path / "old.pt"
        torch.save({"state_dict": state["state_dict"], "epoch": 1}, checkpoint)
        named = "--backbone, --config and --min-class-count"
    data = ["--data", str(CATALOGUE), "--work", str(tmp_path / "w"), *SMOKE]
    assert main(["train", *data, *option, "--init-from", str(checkpoint), "--epochs", "1"]) == 2
    assert named in one_line_error(capsys)


def test_the_decoded_cache_follows_the_data_and_the_size(tmp_path: Path) -> None:
    a = copy_catalogue(tmp_path / "a")
    b = copy_catalogue(tmp_path / "b", {"Topwear": "Tops"})
    (b / "4069.jpg").unlink()  # b's ids differ from a's
    work = tmp_path / "work"

    def prepared(data: Path, size: int) -> list[str]:
        """subCategory's classes, after checking each photo's pixels against its file."""
        config = ExportConfig(heads=[HeadSpec(column="articleType", key="a"), HeadSpec(column="subCategory", key="s")])
        config.train.size, config.data.min_class_count = size, 2
        splits = prepare(data, config, work)
        for part in (splits.train, splits.val, splits.test):
            for image_id, pixels in zip(part.ids, part.pixels, strict=True):
                expected = decode((data / f"{image_id}.jpg").read_bytes(), Preprocessing(size=size))
                assert np.array_equal(pixels, expected), image_id
        return splits.train.classes["subCategory"]

    assert "Topwear" in prepared(a, 32)
    assert "Tops" in prepared(b, 48)
    assert "Tops" in prepared(b, 32)  # not a's pixels at 32 px under b's ids
    # The same folder with its CSV changed in place (same size) is decoded again.
    text = (b / "labels.csv").read_text()
    (b / "labels.csv").write_text(text.replace(",Tops,", ",Tobs,"))
    os.utime(b / "labels.csv", ns=(1, 1))
    assert "Tobs" in prepared(b, 32)
    written = (work / "catalogue-32.npz").stat().st_mtime_ns
    assert "Tobs" in prepared(b, 32)  # unchanged data: the cache is used
    assert (work / "catalogue-32.npz").stat().st_mtime_ns == written
    assert {p.name for p in work.glob("catalogue-*")} == {
        f"catalogue-{s}.{e}" for s in (32, 48) for e in ("npz", "json")
    }


def test_a_stratify_column_that_is_no_head_is_refused_before_decoding(tmp_path: Path) -> None:
    config = ExportConfig.load()
    config.data.stratify_column = "articletype"
    with pytest.raises(ValueError, match="stratify_column 'articletype' is not a head"):
        prepare(tmp_path / "no-such-data", config, tmp_path / "work")


def test_version_folder_swaps_in_only_after_success(tmp_path: Path) -> None:
    old = tmp_path / "m" / "1"
    old.mkdir(parents=True)
    (old / "model.json").write_text("old")
    with pytest.raises(RuntimeError), version_folder(tmp_path / "m", 1, overwrite=True) as (folder, version):
        (folder / "model.json").write_text("half")
        raise RuntimeError("the build failed")
    assert (old / "model.json").read_text() == "old" and [p.name for p in (tmp_path / "m").iterdir()] == ["1"]
    with version_folder(tmp_path / "m", 1, overwrite=True) as (folder, version):
        assert folder != old and version == 1 and (old / "model.json").read_text() == "old"
        (folder / "model.json").write_text("new")
    assert (old / "model.json").read_text() == "new" and [p.name for p in (tmp_path / "m").iterdir()] == ["1"]
    assert stat.S_IMODE(old.stat().st_mode) == 0o755
    with (
        pytest.raises(ValueError, match="exists; pass --overwrite"),
        version_folder(tmp_path / "m", 1, overwrite=False),
    ):
        pass


def test_a_failed_package_with_overwrite_keeps_the_old_version(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "smoke"
    (out / "1").mkdir(parents=True)
    (out / "1" / "model.json").write_text("{}")
    renamed = copy_catalogue(tmp_path / "renamed", {"Topwear": "Tops"})  # fails once the folder is being built
    args = ["package", "--data", str(renamed), "--work", str(trained), *SMOKE, "--out", str(out), "--version", "1"]
    assert main([*args, "--overwrite"]) == 2
    one_line_error(capsys)
    assert (out / "1" / "model.json").read_text() == "{}" and [p.name for p in out.iterdir()] == ["1"]


def test_an_existing_version_is_refused_before_packaging(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "smoke"
    (out / "3").mkdir(parents=True)
    args = ["package", "--data", str(tmp_path / "no-such-data"), "--work", str(trained), *SMOKE, "--out", str(out)]
    assert main([*args, "--version", "3"]) == 2
    assert "smoke/3 exists; pass --overwrite or another --version" in one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["3"] and not any((out / "3").iterdir())  # nothing written


def test_an_ensemble_cannot_overwrite_one_of_its_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models" / "smoke"
    for version in ("1", "2"):
        (out / version).mkdir(parents=True)
    members = ["--members", str(out / "1"), str(out / "2")]
    data = ["--data", str(CATALOGUE), "--work", str(tmp_path / "work"), *SMOKE]
    assert main(["ensemble", *members, *data, "--out", str(out), "--version", "2", "--overwrite"]) == 2
    assert "is one of the --members" in one_line_error(capsys)
    assert (out / "2").is_dir()


@pytest.mark.parametrize("option", [["--limit", "-40"], ["--size", "0"], ["--epochs", "-1"]])
def test_options_out_of_range_are_refused_in_one_line(
    option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options are validated as the config file's values are (before, --limit -40 silently kept 8 images)."""
    code = main(["train", "--data", str(CATALOGUE), "--work", str(tmp_path / "w"), *SMOKE, *option])
    assert code == 2
    assert option[0].strip("-").replace("-", "_") in one_line_error(capsys)


def test_a_negative_int8_limit_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--max-int8-drop is the export config's own field; before, -1 was taken (and any INT8 file failed)."""
    where = ["--data", str(CATALOGUE), "--work", str(tmp_path / "w"), "--model", str(tmp_path / "m"), *SMOKE]
    code = main(["quantize", *where, "--max-int8-drop", "-1"])
    assert code == 2
    assert "max_int8_top1_drop: Input should be greater than or equal to 0" in one_line_error(capsys)

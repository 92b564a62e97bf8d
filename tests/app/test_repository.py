"""Model repository: version resolution and refusals with a one-line reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.errors import ModelLoadError
from app.repository import configured, resolve, versions
from app.settings import Settings
from tests.tiny_model import make_repository


def test_highest_version_is_the_default(tmp_path: Path) -> None:
    make_repository(tmp_path, version=1)
    make_repository(tmp_path, version=3)
    (tmp_path / "tiny" / "notes").mkdir()
    # Folders that only look numeric are not versions: "²" (int() refuses it), "007" (read back as "7").
    for odd in ("²", "007"):
        shutil.copytree(tmp_path / "tiny" / "1", tmp_path / "tiny" / odd)
    assert versions(tmp_path, "tiny") == [1, 3]
    assert resolve(tmp_path, "tiny").metadata.version == 3
    assert resolve(tmp_path, "tiny", 1).folder == tmp_path / "tiny" / "1"
    assert configured(Settings(model_repository=tmp_path, model_name="tiny")).metadata.version == 3
    assert configured(Settings(model_repository=tmp_path, model_name="tiny", model_version=1)).metadata.version == 1


def test_missing_model_or_version_is_refused(tmp_path: Path) -> None:
    make_repository(tmp_path)
    with pytest.raises(ModelLoadError, match="no versions"):
        resolve(tmp_path, "other")
    with pytest.raises(ModelLoadError, match="no version 2"):
        resolve(tmp_path, "tiny", 2)


def test_corrupt_metadata_is_refused_in_one_line(tmp_path: Path) -> None:
    make_repository(tmp_path)
    (tmp_path / "tiny" / "1" / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as refused:
        resolve(tmp_path, "tiny")
    assert "\n" not in refused.value.message


def test_missing_model_file_is_refused(tmp_path: Path) -> None:
    make_repository(tmp_path)
    (tmp_path / "tiny" / "1" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        resolve(tmp_path, "tiny").file_for("fp32")
    with pytest.raises(ModelLoadError, match="no int8"):
        resolve(tmp_path, "tiny").file_for("int8")

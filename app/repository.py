"""The model repository on disk: `<repository>/<name>/<version>/model.json` plus ONNX files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.errors import ModelLoadError
from app.schema import METADATA_FILE, ModelMetadata

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class ModelVersion:
    """One resolved model version: its folder and metadata."""

    folder: Path
    metadata: ModelMetadata

    def file_for(self, precision: str) -> Path:
        """Path of the ONNX file for a precision; ModelLoadError when the version has none."""
        name = self.metadata.files.get(precision)
        if name is None:
            raise ModelLoadError(f"{self.folder}: no {precision} model file (has {sorted(self.metadata.files)})")
        path = self.folder / name
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file missing")
        return path


def versions(repository: Path, name: str) -> list[int]:
    """Numeric versions of a model that have a metadata file, ascending."""
    folder = repository / name
    if not folder.is_dir():
        return []
    # Plain ASCII digits without leading zeros: `int()` refuses "²", and "001" would be read back from "1".
    return sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.name.isascii() and p.name.isdigit() and str(int(p.name)) == p.name and (p / METADATA_FILE).is_file()
    )


def resolve(repository: Path, name: str, version: int | None = None) -> ModelVersion:
    """Find a version (default: the highest) and read its metadata; ModelLoadError with a one-line reason."""
    available = versions(repository, name)
    if not available:
        raise ModelLoadError(f"no versions of model {name!r} under {repository}")
    chosen = version if version is not None else available[-1]
    if chosen not in available:
        raise ModelLoadError(f"model {name!r} has no version {chosen} (available: {available})")
    folder = repository / name / str(chosen)
    try:
        metadata = ModelMetadata.read(folder)
    except (OSError, ValueError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise ModelLoadError(f"{folder / METADATA_FILE}: unreadable metadata ({reason})") from exc
    if metadata.name != name or metadata.version != chosen:
        raise ModelLoadError(f"{folder}: metadata says {metadata.name}/{metadata.version}")
    return ModelVersion(folder, metadata)


def configured(settings: Settings) -> ModelVersion:
    """The version the settings name: their repository and model, their version or else the highest."""
    return resolve(settings.model_repository, settings.model_name, settings.model_version)

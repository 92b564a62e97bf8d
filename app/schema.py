"""Model metadata schema (`model.json`), shared by the export step and the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

METADATA_FILE = "model.json"
ONNX_METADATA_KEY = "vitrine"


class Preprocessing(BaseModel):
    """How raw image bytes become the model's input tensor; the service reproduces it exactly."""

    input_name: str = Field("pixels", description="Name of the ONNX input.")
    size: int = Field(128, ge=16, le=1024, description="Side of the square input in pixels.")
    dtype: Literal["uint8"] = Field("uint8", description="Element type fed to the graph.")
    layout: Literal["NHWC"] = Field("NHWC", description="Tensor layout fed to the graph.")
    channel_order: Literal["RGB"] = "RGB"
    pad_colour: tuple[int, int, int] = Field(
        (255, 255, 255), description="Canvas colour used to pad to a square (catalogue photos are shot on white)."
    )
    resize: Literal["fit-then-pad"] = Field(
        "fit-then-pad",
        description="Scale the longest side to `size` (aspect kept), then centre on a square canvas.",
    )
    resample: Literal["bilinear"] = "bilinear"
    mean: float = Field(127.0, description="Subtracted inside the graph.")
    std: float = Field(128.0, description="Divided by inside the graph.")


class Head(BaseModel):
    """One classification output of the model."""

    name: str = Field(description="Label column in the catalogue CSV, e.g. `articleType`.")
    output: str = Field(description="Name of the ONNX output holding this head's logits.")
    key: str = Field(description="Name used in API answers, e.g. `colour` for `baseColour`.")
    role: Literal["category", "attribute"]
    level: Literal["master", "sub", "article"] | None = Field(None, description="Category level for `category` heads.")
    labels: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _level_matches_role(self) -> Head:
        if (self.role == "category") != (self.level is not None):
            raise ValueError(f"head {self.name}: category heads need a level, attribute heads none")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"head {self.name}: labels are not unique")
        return self


class MemoryVote(BaseModel):
    """The vote of similar training photos built into the graph, blended into some heads' softmax."""

    photos: int = Field(ge=1, description="Training photos in the memory.")
    dimensions: int = Field(ge=1, description="Stored dimensions per photo (PCA of the embedding, int8).")
    neighbours: int = Field(ge=1, description="Most similar photos that vote for each query.")
    blend: dict[str, float] = Field(
        description="Head name to weight w of the vote: the head answers (1 - w) * softmax + w * vote."
    )


class Imported(BaseModel):
    """Where an imported model came from (`vitrine export import`) and the input its original graph takes.

    The packaged file takes the service's uint8 NHWC RGB pixels; a prefix added to the graph turns them into
    this input, so the service runs an imported model exactly like its own."""

    source: str = Field(description="File name of the original ONNX model.")
    sha256: str = Field(description="SHA-256 of the original file.")
    input_name: str = Field(description="Name of the original graph's input.")
    layout: Literal["NHWC", "NCHW"] = Field(description="Layout of the original input.")
    dtype: Literal["float32", "float16", "uint8"] = Field(description="Element type of the original input.")
    channels: Literal["RGB", "BGR", "gray"] = Field(
        description="Channels of the original input; gray is the ITU-R 601 luma of the RGB pixels (as Pillow's)."
    )
    mean: list[float] = Field(description="Per input channel, subtracted from 0-255 pixel values in the prefix.")
    std: list[float] = Field(description="Per input channel, divided by after the mean in the prefix.")
    scores: Literal["logits", "probabilities"] = Field(
        description="What the original outputs give; probabilities pass through a log, so the service's "
        "softmax gives them back unchanged."
    )
    parity: dict[str, float] = Field(
        default_factory=dict, description="The import's parity run: images, largest probability difference, top-1."
    )


class ExplainOutputs(BaseModel):
    """Where a head's class activation maps are in the graph, and where their cells lie on the input."""

    outputs: dict[str, str] = Field(
        description="Head name to the ONNX output of its maps (batch, rows, columns, labels), fetched only to explain."
    )
    cell_px: float = Field(gt=0, description="Input pixels from one cell's centre to the next (the network's stride).")
    first_centre_px: float = Field(
        description="Input pixel (row and column) on which cell (0, 0) is centred, from the convolutions' padding."
    )


class ModelMetadata(BaseModel):
    """Everything the service needs to know about one model version."""

    name: str
    version: int = Field(ge=1)
    architecture: str = "efficientnet-lite0"
    preprocessing: Preprocessing = Preprocessing()
    heads: list[Head] = Field(min_length=1)
    embedding_output: str | None = Field("embedding", description="Name of the L2-normalised embedding output.")
    files: dict[str, str] = Field(
        default_factory=dict, description="Precision (`fp32`, `int8`, `fp16`) to ONNX file name in the version folder."
    )
    metrics: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per precision, per head test metrics, e.g. {'int8': {'articleType.top1': 0.9}}.",
    )
    memory_vote: MemoryVote | None = Field(None, description="The in-graph vote of similar photos, if any.")
    members: list[str] | None = Field(
        None, description="For an ensemble: the versions whose softmax each head averages (`vitrine export ensemble`)."
    )
    imported: Imported | None = Field(None, description="For an imported model: its original input and parity.")
    explain: ExplainOutputs | None = Field(
        None, description="The class activation map outputs that explain heads (`vitrine export explainable`)."
    )
    created: str | None = None

    @model_validator(mode="after")
    def _check_heads(self) -> ModelMetadata:
        names = [h.name for h in self.heads]
        keys = [h.key for h in self.heads]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError("head names and keys must be unique")
        levels = [h.level for h in self.heads if h.level is not None]
        if len(set(levels)) != len(levels):
            raise ValueError("each category level may appear once")
        if self.explain and (unknown := sorted(set(self.explain.outputs) - set(names))):
            raise ValueError(f"explain.outputs names heads the model does not have: {unknown}")
        return self

    def head_by_level(self, level: str) -> Head | None:
        """The category head at `level`, if the model has one."""
        return next((h for h in self.heads if h.level == level), None)

    @property
    def attribute_heads(self) -> list[Head]:
        """Heads that are not category levels."""
        return [h for h in self.heads if h.role == "attribute"]

    @classmethod
    def read(cls, folder: Path) -> ModelMetadata:
        """Load `model.json` from a version folder."""
        return cls.model_validate_json((folder / METADATA_FILE).read_text(encoding="utf-8"))

    def write(self, folder: Path) -> Path:
        """Write `model.json` into a version folder and return its path."""
        path = folder / METADATA_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

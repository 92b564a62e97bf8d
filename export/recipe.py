"""The build recipe: a config file's `[[stages]]`, which `vitrine export build` runs in order.

Each stage is one table with a unique `name` and a `kind`:

- `train`: fine-tune in the work folder `<runs>/<name>`, from the ImageNet weights or from an earlier train
  stage's best checkpoint (`init_from`); `backbone` and a `train` table override the config's recipe.
- `package`: a train stage's best checkpoint (`weights`) as version `version` of model `model`: calibrated,
  converted, quantised, scored, with its card.
- `ensemble`: packaged stages (`members`) merged into one version that averages them.

A version goes under the work root (`<runs>/members/<model>/<version>`), or into the model repository
(`<models>/<model>/<version>`) with `publish = true`. A finished stage leaves `<runs>/<name>/stage.json`; a
later build skips it while that record's key (the stage, the configuration it ran with, the data's fingerprint
and the records of the stages it reads) is unchanged and its outputs exist, so an interrupted build resumes
at the stage it was in. A new kind is one class below (its fields, `needs`, `configure`, `outputs`,
`describe`, `run`) added to `Stage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from export.config import ExportConfig, TrainConfig, apply_options
from export.data import fingerprint
from export.ensemble import build_ensemble
from export.packaging import package
from export.pipeline import prepare, read_lineage, record_lineage
from export.train import run_train

log = logging.getLogger(__name__)

RECORD = "stage.json"
STAGE_NAME = r"^[a-z0-9][a-z0-9._-]*$"


@dataclass
class Build:
    """One build: where it reads and writes, the options given over every stage's, and its command line."""

    data: Path
    runs: Path
    models: Path
    command: str
    options: dict[str, Any] = field(default_factory=dict)
    bench_seconds: float = 3.0

    def work(self, stage: str) -> Path:
        """The stage's own folder: its record, and for a train stage its checkpoints and catalogue cache."""
        return self.runs / stage


class StageBase(BaseModel):
    """What every stage has: a unique name, which also names its folder under the work root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=STAGE_NAME, description="Unique within the recipe; names `<runs>/<name>`.")

    def needs(self) -> list[str]:
        """The earlier stages whose outputs this one reads."""
        return []

    def check(self, earlier: dict[str, Stage], base: ExportConfig) -> None:
        """Raise `ValueError` when a stage this one reads is not an earlier stage of a fitting kind."""

    def configure(self, config: ExportConfig, recipe: Recipe) -> None:
        """Set this stage's own settings on a copy of the recipe's configuration."""

    def outputs(self, build: Build, recipe: Recipe) -> list[Path]:
        """What the stage leaves; it counts as finished only while all of them exist."""
        return []

    def describe(self, build: Build, recipe: Recipe, config: ExportConfig) -> str:
        """One line saying what the stage does, for the build's log."""
        return ""

    def run(self, build: Build, recipe: Recipe, config: ExportConfig) -> None:
        """Do the stage's work with `config` (the recipe's, this stage's settings and the build's options)."""


class TrainStage(StageBase):
    """Fine-tune a network; its best checkpoint stays in the stage's work folder."""

    kind: Literal["train"]
    backbone: str | None = Field(None, description="Override the config's backbone.")
    init_from: str | None = Field(None, description="An earlier train stage: continue from its best checkpoint.")
    train: dict[str, Any] = Field(default_factory=dict, description="Override the config's [train] settings.")

    @field_validator("train")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "init_from" in value:
            raise ValueError("name the checkpoint's train stage in the stage's `init_from`, not a path")
        unknown = sorted(value.keys() - TrainConfig.model_fields.keys())
        if unknown:
            raise ValueError(f"unknown training settings {', '.join(unknown)}")
        try:
            TrainConfig.model_validate(value)  # each value in its range
        except ValidationError as error:  # its first problem, in one line like the others
            first = error.errors()[0]
            raise ValueError(f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}") from None
        return value

    def needs(self) -> list[str]:
        return [self.init_from] if self.init_from else []

    def check(self, earlier: dict[str, Stage], base: ExportConfig) -> None:
        if self.init_from is None:
            return
        parent = earlier.get(self.init_from)
        if not isinstance(parent, TrainStage):
            raise ValueError(f"stage {self.name}: init_from {self.init_from!r} is no earlier train stage")
        if (self.backbone or base.backbone) != (parent.backbone or base.backbone):
            raise ValueError(f"stage {self.name}: its backbone differs from that of {self.init_from}, its init_from")

    def configure(self, config: ExportConfig, recipe: Recipe) -> None:
        if self.backbone is not None:
            config.backbone = self.backbone
        for key, value in self.train.items():
            setattr(config.train, key, value)

    def checkpoint(self, build: Build) -> Path:
        """The best checkpoint this stage keeps."""
        return build.work(self.name) / "checkpoints" / "best.pt"

    def outputs(self, build: Build, recipe: Recipe) -> list[Path]:
        return [self.checkpoint(build), build.work(self.name) / "lineage.json"]

    def describe(self, build: Build, recipe: Recipe, config: ExportConfig) -> str:
        start = f"stage {self.init_from}'s best checkpoint" if self.init_from else "the ImageNet weights"
        settings = {**self.train, **{k: v for k, v in build.options.items() if k in TrainConfig.model_fields}}
        given = ", ".join(f"{k} {v}" for k, v in settings.items()) or "the config's settings"
        return f"train {config.backbone} from {start} ({given}) in {build.work(self.name)}"

    def run(self, build: Build, recipe: Recipe, config: ExportConfig) -> None:
        work = build.work(self.name)
        if self.init_from is not None:
            parent = recipe.stage(self.init_from)
            assert isinstance(parent, TrainStage)  # Recipe checked it
            config.train.init_from = parent.checkpoint(build)
        torch.manual_seed(config.train.seed)  # the head's initialisation, as `vitrine export train` seeds it
        splits = prepare(build.data, config, work)
        run_train(splits, config, work)
        # The card shows the recipe as run; the checkpoint it continued is named by its stage, not a work path.
        recipe_as_run = config.train.model_dump(mode="json")
        recipe_as_run["init_from"] = f"stage {self.init_from}" if self.init_from else None
        record_lineage(work, f"{build.command}  # stage {self.name}", config.train.init_from, recipe_as_run)


class VersionStage(StageBase):
    """A stage that writes a model version folder."""

    model: str = Field(pattern=STAGE_NAME, description="The model's name: its folder in the repository.")
    version: int = Field(ge=1)
    publish: bool = Field(False, description="Write into the model repository, not under the work root.")

    def folder(self, build: Build) -> Path:
        """The version folder this stage writes."""
        root = build.models if self.publish else build.runs / "members"
        return root / self.model / str(self.version)

    def outputs(self, build: Build, recipe: Recipe) -> list[Path]:
        return [self.folder(build) / "model.json"]

    def reproduce(self, build: Build) -> str:
        """The command a card gives to rebuild this version."""
        return f"{build.command}\n# this version is its stage {self.name} ({self.model} v{self.version})"


class PackageStage(VersionStage):
    """A train stage's best checkpoint as a version folder."""

    kind: Literal["package"]
    weights: str = Field(description="The train stage whose best checkpoint is packaged.")

    def needs(self) -> list[str]:
        return [self.weights]

    def check(self, earlier: dict[str, Stage], base: ExportConfig) -> None:
        if not isinstance(earlier.get(self.weights), TrainStage):
            raise ValueError(f"stage {self.name}: weights {self.weights!r} is no earlier train stage")

    def configure(self, config: ExportConfig, recipe: Recipe) -> None:
        recipe.stage(self.weights).configure(config, recipe)  # the backbone and size the weights were trained at

    def describe(self, build: Build, recipe: Recipe, config: ExportConfig) -> str:
        return f"package stage {self.weights}'s best checkpoint as {self.model} v{self.version} in {self.folder(build)}"

    def run(self, build: Build, recipe: Recipe, config: ExportConfig) -> None:
        work = build.work(self.weights)
        torch.manual_seed(config.train.seed)
        splits = prepare(build.data, config, work)
        package(
            splits,
            config,
            work,
            self.folder(build).parent,
            self.version,
            overwrite=True,
            reproduce=self.reproduce(build),
            stages=read_lineage(work),
            bench_seconds=build.bench_seconds,
        )


class EnsembleStage(VersionStage):
    """Packaged versions merged into one version whose heads average theirs."""

    kind: Literal["ensemble"]
    members: list[str] = Field(min_length=2, description="Earlier package or ensemble stages.")

    def needs(self) -> list[str]:
        return list(self.members)

    def check(self, earlier: dict[str, Stage], base: ExportConfig) -> None:
        for member in self.members:
            if not isinstance(earlier.get(member), VersionStage):
                raise ValueError(f"stage {self.name}: member {member!r} is no earlier package or ensemble stage")

    def member_folders(self, build: Build, recipe: Recipe) -> list[Path]:
        """The members' version folders, in the recipe's order."""
        folders = []
        for member in self.members:
            stage = recipe.stage(member)
            assert isinstance(stage, VersionStage)  # Recipe checked it
            folders.append(stage.folder(build))
        return folders

    def describe(self, build: Build, recipe: Recipe, config: ExportConfig) -> str:
        members = ", ".join(str(f) for f in self.member_folders(build, recipe))
        return f"merge {members} into {self.model} v{self.version} in {self.folder(build)}"

    def run(self, build: Build, recipe: Recipe, config: ExportConfig) -> None:
        splits = prepare(build.data, config, build.work(self.name))  # the same split the members were scored on
        build_ensemble(
            self.member_folders(build, recipe),
            splits,
            self.folder(build).parent,
            self.version,
            overwrite=True,
            reproduce=self.reproduce(build),
            bench_seconds=build.bench_seconds,
            max_int8_drop=config.max_int8_top1_drop,
            members_built_apart=False,
        )


Stage = Annotated[TrainStage | PackageStage | EnsembleStage, Field(discriminator="kind")]


class Recipe(BaseModel):
    """A config file: the configuration every stage starts from, and the stages in order."""

    model_config = ConfigDict(extra="forbid")

    config: ExportConfig
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_stages(self) -> Recipe:
        earlier: dict[str, Stage] = {}
        versions: dict[tuple[str, int], str] = {}
        for stage in self.stages:
            if stage.name in earlier:
                raise ValueError(f"two stages are named {stage.name!r}")
            stage.check(earlier, self.config)
            if isinstance(stage, VersionStage):
                # A name and version identify one artefact, wherever it is written.
                other = versions.setdefault((stage.model, stage.version), stage.name)
                if other != stage.name:
                    raise ValueError(f"stages {other} and {stage.name} both write {stage.model} v{stage.version}")
            earlier[stage.name] = stage
        return self

    @classmethod
    def load(cls, path: Path) -> Recipe:
        """Read a config file with `[[stages]]`."""
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        stages = raw.pop("stages", None)
        if not stages:
            raise ValueError(f"{path} has no [[stages]]: add them, or run the steps (`train`, then `package`)")
        return cls.model_validate({"config": raw, "stages": stages})

    def stage(self, name: str) -> Stage:
        """The stage called `name`."""
        return next(s for s in self.stages if s.name == name)

    def config_for(self, stage: Stage, options: dict[str, Any]) -> ExportConfig:
        """The configuration a stage runs with: the recipe's, then the stage's settings, then the options."""
        config = self.config.model_copy(deep=True)
        stage.configure(config, self)
        apply_options(config, options)
        return config


def _key(stage: Stage, config: ExportConfig, build: Build, records: dict[str, dict[str, Any]]) -> str:
    """What a stage's result depends on, hashed: a finished stage is reused only while this is unchanged."""
    parts = {
        "stage": stage.model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "data": fingerprint(build.data, config.data, [h.column for h in config.heads]),
        "needs": {name: records[name]["run"] for name in stage.needs()},  # a rerun upstream reruns this
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _finished(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record


def run_recipe(recipe: Recipe, build: Build, *, dry_run: bool = False) -> list[str]:
    """Run the stages in order, skipping finished ones; return the names of those run (with `dry_run`, those
    that would run)."""
    records: dict[str, dict[str, Any]] = {}  # stages finished, earlier or now
    ran: list[str] = []
    for number, stage in enumerate(recipe.stages, 1):
        label = f"stage {number}/{len(recipe.stages)} {stage.name}"
        config = recipe.config_for(stage, build.options)
        pending = [name for name in stage.needs() if name not in records]  # only in a dry run
        key = None if pending else _key(stage, config, build, records)
        path = build.work(stage.name) / RECORD
        record = _finished(path)
        outputs = stage.outputs(build, recipe)
        if key is not None and record is not None and record.get("key") == key and all(p.exists() for p in outputs):
            log.info("%s: finished %s, skipped", label, record.get("finished"))
            records[stage.name] = record
            continue
        log.info("%s: %s", label, stage.describe(build, recipe, config))
        ran.append(stage.name)
        if dry_run:
            continue
        path.unlink(missing_ok=True)  # a stage stopped half-way is not finished
        stage.run(build, recipe, config)
        record = {
            "kind": stage.kind,
            "key": key,
            "run": uuid.uuid4().hex,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "outputs": [str(p) for p in outputs],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        records[stage.name] = record
    log.info("%d of %d stages %s", len(ran), len(recipe.stages), "to run" if dry_run else "run")
    return ran

"""The build recipe: the committed default recipe built end to end on the sample photos, resumed, and checked."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.repository import resolve, versions
from app.settings import DEFAULT_REPOSITORY, Settings
from export.cli import _args, _config, main
from export.config import DEFAULT_CONFIG
from export.recipe import Build, PackageStage, Recipe, TrainStage, VersionStage, run_recipe
from tests.conftest import CATALOGUE

# The commands that built version 4's training stages (its member cards), as `vitrine export train` options.
VERSION_4_TRAINING = {
    "lite0": ["--backbone-lr", "0.0005"],
    "lite0-r2": ["--warmup-epochs", "0", "--epochs", "9", "--head-lr", "0.001", "--backbone-lr", "0.0003"],
    "lite1": ["--backbone", "efficientnet-lite1", "--backbone-lr", "0.0005"],
    "lite1-r2": [
        *("--backbone", "efficientnet-lite1", "--warmup-epochs", "0", "--epochs", "7"),
        *("--head-lr", "0.001", "--backbone-lr", "0.0003"),
    ],
}
# Small enough to train every stage on the 48 sample photos in seconds.
SMOKE = [
    *("--size", "32", "--min-class-count", "2", "--epochs", "1", "--warmup-epochs", "0"),
    *("--max-int8-drop", "1.0", "--bench-seconds", "0.1"),
]
SMOKE_OPTIONS = {"size": 32, "min_class_count": 2, "epochs": 1, "warmup_epochs": 0, "max_int8_drop": 1.0}


def test_the_default_recipe_trains_each_stage_as_version_4_was_trained() -> None:
    recipe = Recipe.load(DEFAULT_CONFIG)
    for name, options in VERSION_4_TRAINING.items():
        stage = recipe.stage(name)
        expected = _config(_args(["train", "--data", "unused", *options]))
        assert recipe.config_for(stage, {}) == expected, name
    assert [s.name for s in recipe.stages if isinstance(s, TrainStage) and s.init_from] == ["lite0-r2", "lite1-r2"]
    packages = {s.weights: s for s in recipe.stages if isinstance(s, PackageStage)}
    assert {w: (s.model, s.version, s.publish) for w, s in packages.items()} == {
        "lite0-r2": ("product-classifier-lite0", 1, False),
        "lite1-r2": ("product-classifier-lite1", 1, False),
    }
    assert recipe.config_for(packages["lite1-r2"], {}).backbone == "efficientnet-lite1"
    final = recipe.stages[-1]
    assert final.model_dump(include={"kind", "members", "model", "version", "publish"}) == {
        "kind": "ensemble",
        "members": ["lite0-package", "lite1-package"],
        "model": "product-classifier",
        "version": 4,
        "publish": True,
    }


def test_the_tree_holds_the_one_version_the_recipe_publishes_naming_no_work_path() -> None:
    """Earlier versions stay in git history; the members are named apart from the model they make up."""
    published = [s for s in Recipe.load(DEFAULT_CONFIG).stages if isinstance(s, VersionStage) and s.publish]
    assert [(s.model, s.version) for s in published] == [
        (name, version) for name in ("product-classifier",) for version in versions(DEFAULT_REPOSITORY, name)
    ]
    folder = resolve(DEFAULT_REPOSITORY, "product-classifier").folder
    for path in [folder / "model.json", *folder.glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        assert "runs/" not in text and "/tmp/" not in text, path  # git-ignored or gone
    members = resolve(DEFAULT_REPOSITORY, "product-classifier").metadata.members or []
    assert len(members) == 2 and not any(m.startswith("product-classifier v") for m in members)


def stages_file(tmp_path: Path, stages: str) -> Path:
    """The default config with other stages."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    path = tmp_path / "recipe.toml"
    path.write_text(text[: text.index("\n[[stages]]\n") + 1] + stages, encoding="utf-8")
    return path


TRAIN_A = '[[stages]]\nname = "a"\nkind = "train"\n'


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("", "has no [[stages]]"),
        (TRAIN_A + TRAIN_A, "two stages are named 'a'"),
        ('[[stages]]\nname = "a"\nkind = "distil"\n', "does not match any of the expected tags"),
        (TRAIN_A + "train = { mixup_alpha = 0.2 }\n", "unknown training settings mixup_alpha"),
        (TRAIN_A + "train = { epochs = -1 }\n", "greater than or equal to 0"),
        (TRAIN_A + 'train = { init_from = "runs/a/checkpoints/best.pt" }\n', "in the stage's `init_from`"),
        (TRAIN_A + 'init_from = "b"\n', "init_from 'b' is no earlier train stage"),
        (
            TRAIN_A + '[[stages]]\nname = "b"\nkind = "train"\ninit_from = "a"\nbackbone = "efficientnet-lite1"\n',
            "its backbone differs from that of a",
        ),
        (
            TRAIN_A + '[[stages]]\nname = "p"\nkind = "package"\nweights = "q"\nmodel = "m"\nversion = 1\n',
            "weights 'q' is no earlier train stage",
        ),
        (
            TRAIN_A
            + '[[stages]]\nname = "p"\nkind = "package"\nweights = "a"\nmodel = "m"\nversion = 1\n'
            + '[[stages]]\nname = "e"\nkind = "ensemble"\nmembers = ["p", "a"]\nmodel = "n"\nversion = 1\n',
            "member 'a' is no earlier package or ensemble stage",
        ),
        (
            TRAIN_A
            + '[[stages]]\nname = "p"\nkind = "package"\nweights = "a"\nmodel = "m"\nversion = 1\n'
            + '[[stages]]\nname = "q"\nkind = "package"\nweights = "a"\nmodel = "m"\nversion = 1\npublish = true\n',
            "stages p and q both write m v1",
        ),
    ],
)
def test_a_wrong_recipe_stops_before_any_stage_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stages: str, message: str
) -> None:
    runs = tmp_path / "runs"
    code = main(["build", str(stages_file(tmp_path, stages)), "--data", str(CATALOGUE), "--runs", str(runs)])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("vitrine export build: ") and message in error, error
    assert len(error.splitlines()) == 1 and not runs.exists()


@pytest.mark.slow
def test_the_default_recipe_builds_a_servable_version_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs, models = tmp_path / "runs", tmp_path / "models"
    command = ["build", str(DEFAULT_CONFIG), "--data", str(CATALOGUE), "--runs", str(runs), "--models", str(models)]
    caplog.set_level(logging.INFO, logger="export")
    assert main([*command, *SMOKE]) == 0
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    assert [line.split(":")[0] for line in started] == [
        f"stage {i}/7 {name}"
        for i, name in enumerate(
            ["lite0", "lite0-r2", "lite0-package", "lite1", "lite1-r2", "lite1-package", "ensemble"], 1
        )
    ]
    assert "from stage lite0's best checkpoint" in started[1]

    # The members under the work root, each under its own name; the default model in the repository.
    default = resolve(models, "product-classifier")
    assert default.metadata.version == 4 and default.folder == models / "product-classifier" / "4"
    assert default.metadata.members == [
        "product-classifier-lite0 v1 (efficientnet-lite0)",
        "product-classifier-lite1 v1 (efficientnet-lite1)",
    ]
    assert resolve(runs / "members", "product-classifier-lite1", 1).metadata.architecture == "efficientnet-lite1"
    assert sorted(p.name for p in models.iterdir()) == ["product-classifier"]
    # Its metadata names no work path, nor do its cards but in the command that builds it.
    assert str(runs) not in (default.folder / "model.json").read_text(encoding="utf-8")
    for path in default.folder.glob("*.md"):
        text = path.read_text(encoding="utf-8")
        assert str(runs / "members") not in text and "checkpoints" not in text, path
    card = (default.folder / "README.md").read_text(encoding="utf-8")
    assert f"vitrine export build {DEFAULT_CONFIG} --data {CATALOGUE}" in card and "the commands in member" not in card
    assert "| init_from | stage lite1 |" in (default.folder / "member-2.md").read_text(encoding="utf-8")
    lineage = json.loads((runs / "lite1-r2" / "lineage.json").read_text())["stages"]
    assert [len(stage["history"]) for stage in lineage] == [1, 1]
    assert lineage[1]["recipe"]["init_from"] == "stage lite1" and lineage[1]["command"].endswith("# stage lite1-r2")

    settings = Settings(model_repository=models, providers="cpu", intra_op_threads=1, max_batch_size=4)
    photo = sorted(CATALOGUE.glob("*.jpg"))[0].read_bytes()
    with TestClient(create_app(settings)) as client:
        body = client.post("/classify", files=[("images", ("a.jpg", photo, "image/jpeg"))]).json()
    assert body["model"]["version"] == 4 and body["results"][0]["status"] == "ok"

    # Built again: every stage is finished, nothing is rewritten.
    written = (default.folder / "model.json").stat().st_mtime_ns
    caplog.clear()
    assert main([*command, *SMOKE]) == 0
    assert sum(r.getMessage().endswith(", skipped") for r in caplog.records) == 7
    assert (default.folder / "model.json").stat().st_mtime_ns == written
    # A stage whose record is gone reruns, and so does what reads it; other options rerun everything.
    (runs / "lite1-package" / "stage.json").unlink()
    build = Build(CATALOGUE, runs, models, "test", SMOKE_OPTIONS)
    assert run_recipe(Recipe.load(DEFAULT_CONFIG), build, dry_run=True) == ["lite1-package", "ensemble"]
    build.options = {**SMOKE_OPTIONS, "epochs": 2}
    assert len(run_recipe(Recipe.load(DEFAULT_CONFIG), build, dry_run=True)) == 7

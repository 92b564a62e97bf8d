"""onnxruntime's telemetry is off in every Vitrine process unless the operator turns it back on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Opens the model the way `vitrine serve` does and runs it once: what onnxruntime's telemetry would record.
SERVE_ONCE = """
import sys
from app.core import open_runtime
from app.settings import Settings
runtime = open_runtime(Settings(model_repository=sys.argv[1], model_name="tiny", providers="cpu"))
runtime.run(runtime.blank(1))
"""
# What `import app` leaves in ORT_DISABLE_TELEMETRY, printed by a fresh interpreter.
SETTING_AFTER_IMPORT = "import os, app; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"


def clean_env(home: Path, setting: str | None) -> dict[str, str]:
    """This environment with `home` as the home folder and ORT_DISABLE_TELEMETRY set to `setting` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    if setting is not None:
        env["ORT_DISABLE_TELEMETRY"] = setting
    return env


def setting_after_import(setting: str | None, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SETTING_AFTER_IMPORT],
        cwd=ROOT,
        env=clean_env(tmp_path, setting),
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def telemetry_files(tiny_repo: Path, home: Path, setting: str | None) -> list[str]:
    """Run SERVE_ONCE with `home` as the home folder and ORT_DISABLE_TELEMETRY set to `setting`; return the files
    onnxruntime's telemetry left under it."""
    subprocess.run(
        [sys.executable, "-c", SERVE_ONCE, str(tiny_repo)],
        cwd=ROOT,
        env=clean_env(home, setting),
        check=True,
        timeout=120,
    )
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize(("operators", "after_import"), [(None, "1"), ("0", "0")])
def test_importing_vitrine_turns_telemetry_off_unless_the_operator_chose(
    operators: str | None, after_import: str, tmp_path: Path
) -> None:
    """Unset, `import app` sets "1"; an operator's own value wins (onnxruntime turns telemetry off only for "1",
    so "0" gets it back)."""
    assert setting_after_import(operators, tmp_path) == after_import


def test_no_telemetry_files_are_written(tiny_repo: Path, tmp_path: Path) -> None:
    """End to end: with the variable unset, serving leaves no device id and no event cache in the home folder.
    onnxruntime also keeps quiet by itself on CI services it recognises (by their environment variables, which
    differ from one CI to the next), so the same run with telemetry turned back on is the control: where it writes
    nothing either, this environment cannot show the difference and the test is skipped rather than passed."""
    control = telemetry_files(tiny_repo, tmp_path / "control", "0")
    if not any(f.endswith("deviceid") for f in control):
        pytest.skip(f"onnxruntime writes no telemetry here even when asked to ({control}); nothing to compare")
    assert telemetry_files(tiny_repo, tmp_path / "home", None) == []

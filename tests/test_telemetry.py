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
from app.service import open_runtime
from app.settings import Settings
runtime = open_runtime(Settings(model_repository=sys.argv[1], model_name="tiny", providers="cpu"))
runtime.run(runtime.blank(1))
"""
# onnxruntime also keeps quiet by itself on these CI services, which would make the control case pass vacuously.
CI_SUPPRESSED = ("GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD")


def telemetry_files(tiny_repo: Path, home: Path, setting: str | None) -> list[str]:
    """Run SERVE_ONCE with `home` as the home folder and ORT_DISABLE_TELEMETRY set to `setting` (None: unset);
    return the files onnxruntime's telemetry left under it."""
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    if setting is not None:
        env["ORT_DISABLE_TELEMETRY"] = setting
    subprocess.run([sys.executable, "-c", SERVE_ONCE, str(tiny_repo)], cwd=ROOT, env=env, check=True, timeout=120)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_vitrine_turns_onnxruntime_telemetry_off(tiny_repo: Path, tmp_path: Path) -> None:
    """Without ORT_DISABLE_TELEMETRY in the environment, importing `app` sets it: no device id, no event cache."""
    assert telemetry_files(tiny_repo, tmp_path / "home", None) == []


@pytest.mark.skipif(any(v in os.environ for v in CI_SUPPRESSED), reason="onnxruntime suppresses telemetry on this CI")
def test_an_operator_can_turn_it_back_on(tiny_repo: Path, tmp_path: Path) -> None:
    """The operator's own value wins (onnxruntime turns telemetry off only for "1"), which also shows that the
    test above would see the files if they were written."""
    left = telemetry_files(tiny_repo, tmp_path / "home", "0")
    assert any(f.endswith("deviceid") for f in left), left

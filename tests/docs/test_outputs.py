"""What the benchmark, the soak and docker-verify write goes to the git-ignored out/ folder by default."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.cli import parser
from tests.conftest import ROOT


def _ignored(path: Path) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    return done.returncode == 0


def test_bench_writes_under_out_by_default() -> None:
    results: Path = parser().parse_args([]).results
    assert results == ROOT / "out" / "bench"
    assert _ignored(results / "bench.json")


def test_soak_and_verify_write_under_out_by_default() -> None:
    soak = (ROOT / "tools" / "soak.py").read_text(encoding="utf-8")
    assert 'default=ROOT / "out" / "soak.json"' in soak
    verify = (ROOT / "deploy" / "verify.sh").read_text(encoding="utf-8")
    assert "OUTPUT=${VERIFY_OUTPUT:-$ROOT/out/deploy/verify-output.txt}" in verify
    assert _ignored(ROOT / "out" / "soak.json")
    assert _ignored(ROOT / "out" / "deploy" / "verify-output.txt")


def test_the_performance_page_keeps_the_latest_run() -> None:
    kept = ROOT / "docs" / "performance"
    for name in ("bench.txt", "bench.json", "bench.png"):
        assert (kept / name).is_file(), name
        assert not _ignored(kept / name)

"""bench/explain.py runs every path on the default model and prints the per-image times and the ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.explain import main


def test_prints_the_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an empty --data folder: the committed catalogue photos are used
    assert main(["--data", str(tmp_path), "--images", "8", "--batch", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 JPEGs from" in out
    for path in ("classify", "explain", "attributes", "attributes+palette"):
        assert f"  {path} " in out
    ratio = float(out.split("explain / classify: ")[1].split()[0])
    assert ratio > 0
    assert "attributes with palette / attributes: " in out

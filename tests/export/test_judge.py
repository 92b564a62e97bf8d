"""export.judge: top-1 of a running service's answers against catalogue labels, as the hold-out is judged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from app.settings import Settings
from export import judge
from tests.conftest import CATALOGUE
from tests.live import running
from tests.tiny_model import HEADS


def test_judge_scores_the_service_answers_against_the_csv(
    tiny_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {r["id"]: r for r in csv.DictReader((CATALOGUE / "labels.csv").open(newline=""))}
    subset = sorted(rows)[:30]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": subset}))
    out = tmp_path / "judged.json"
    with running(tiny_settings) as url:
        assert judge.main(["--url", url, "--data", str(CATALOGUE), "--split", str(split), "--out", str(out)]) == 0
        expected = {i: judge.answers(url, (CATALOGUE / f"{i}.jpg").read_bytes()) for i in subset}
    result = json.loads(out.read_text())
    assert result["photos"] == 30 and result["model"]["name"] == "tiny"
    assert set(result["top1"]) == {h.name for h in HEADS}
    article_right = sum(expected[i]["article"] == rows[i]["articleType"] for i in subset)
    assert result["top1"]["articleType"] == pytest.approx(article_right / 30)
    colour_right = sum(expected[i]["colour"] == rows[i]["baseColour"] for i in subset)
    assert result["top1"]["baseColour"] == pytest.approx(colour_right / 30)
    # The tiny model knows few labels: photos whose label it cannot answer are counted apart.
    colours = next(h.labels for h in HEADS if h.name == "baseColour")
    unknown = sum(rows[i]["baseColour"] not in colours for i in subset)
    assert result["unknown_labels"]["baseColour"] == unknown > 0
    if unknown < 30:
        assert result["top1_known_labels"]["baseColour"] == pytest.approx(colour_right / (30 - unknown))
    assert "| articleType |" in capsys.readouterr().out

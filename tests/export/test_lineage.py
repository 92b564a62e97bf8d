"""Training lineage: a continued run records the stages before it, so its card can show and reproduce them."""

from __future__ import annotations

import json
from pathlib import Path

from export.pipeline import read_lineage, record_lineage


def run_folder(path: Path, epochs: int) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "best.pt").write_bytes(b"weights")
    (path / "history.json").write_text(json.dumps([{"epoch": e + 1} for e in range(epochs)]))
    return path


def test_a_continued_run_lists_every_stage_oldest_first(tmp_path: Path) -> None:
    first = run_folder(tmp_path / "first", 3)
    record_lineage(first, "vitrine export train --data d", None)
    second = run_folder(tmp_path / "second", 2)
    record_lineage(
        second, "vitrine export train --data d --init-from first/checkpoints/best.pt", first / "checkpoints" / "best.pt"
    )
    third = run_folder(tmp_path / "third", 1)
    stages = record_lineage(third, "third", second / "checkpoints" / "best.pt", {"epochs": 1})
    assert [s["command"] for s in stages] == [
        "vitrine export train --data d",
        "vitrine export train --data d --init-from first/checkpoints/best.pt",
        "third",
    ]
    assert [len(s["history"]) for s in stages] == [3, 2, 1]
    assert [s["recipe"] for s in stages] == [None, None, {"epochs": 1}]
    assert read_lineage(third) == stages


def test_a_folder_without_lineage_is_one_stage_of_unknown_command(tmp_path: Path) -> None:
    old = run_folder(tmp_path / "old", 4)
    assert read_lineage(old) == [{"command": None, "history": [{"epoch": e} for e in range(1, 5)]}]
    assert read_lineage(tmp_path / "missing") == [{"command": None, "history": []}]

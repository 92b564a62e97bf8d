r"""Validation top-1 per epoch of training runs side by side, as a Markdown table, from their history.json files.

    python export/results/history_table.py control=export/results/mixup/history-control.json \
        "drop path 0.2=export/results/droppath/history-lite0-droppath.json"

A path ending in `#ema` reads a run's weight-EMA scores (`ema_val_*`, `--ema-decay`) instead of its raw ones.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from export.card import markdown_table


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    first = next(iter(runs.values()))[0]
    heads = [k.removeprefix("val_") for k in first if k.startswith("val_") and k != "val_mean_top1"]
    rows = [
        [
            f"{e['epoch']:.0f}",
            name,
            f"{e['val_mean_top1']:.4f}",
            *[f"{e['val_' + h]:.4f}" for h in heads],
            f"{e['minutes']:.1f}",
        ]
        for epoch in itertools.zip_longest(*runs.values())
        for name, e in zip(runs, epoch, strict=True)
        if e is not None
    ]
    lines = markdown_table(["epoch", "run", "val mean", *heads, "minutes"], rows)
    for name, history in runs.items():
        best = best_epoch(history)
        lines.append(f"\n{name}: best epoch {best['epoch']:.0f}, val mean {best['val_mean_top1']:.4f}")
    return "\n".join(lines)


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The epoch with the best validation mean: the one whose checkpoint training keeps."""
    return max(history, key=lambda e: e["val_mean_top1"])


def load(spec: str) -> list[dict[str, float]]:
    """A history.json's epochs; with `#ema` after the path, its EMA scores under the usual `val_*` keys."""
    path, _, scores = spec.partition("#")
    history: list[dict[str, float]] = json.loads(Path(path).read_text())
    if scores == "ema":
        return [
            {k: v for k, v in e.items() if not k.startswith("val_")}
            | {k.removeprefix("ema_"): v for k, v in e.items() if k.startswith("ema_val_")}
            for e in history
        ]
    if scores:
        raise SystemExit(f"{spec}: only '#ema' may follow the path")
    return history


if __name__ == "__main__":
    if not sys.argv[1:] or not all("=" in arg for arg in sys.argv[1:]):
        raise SystemExit(__doc__)
    named = dict(arg.split("=", 1) for arg in sys.argv[1:])
    print(table({name: load(spec) for name, spec in named.items()}))

"""Validation top-1 per epoch of training runs side by side, as a Markdown table, from their history.json files.

    python export/results/history_table.py control=export/results/mixup/history-control.json \
        "drop path 0.2=export/results/droppath/history-lite0-droppath.json"
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
        best = max(history, key=lambda e: e["val_mean_top1"])
        lines.append(f"\n{name}: best epoch {best['epoch']:.0f}, val mean {best['val_mean_top1']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    named = dict(arg.split("=", 1) for arg in sys.argv[1:])
    print(table({name: json.loads(Path(path).read_text()) for name, path in named.items()}))

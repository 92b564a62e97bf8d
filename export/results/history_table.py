"""Validation top-1 per epoch of training runs side by side, as a Markdown table, from their history.json files.

    python export/results/history_table.py control=export/results/mixup/history-control.json \
        "drop path 0.2=export/results/droppath/history-lite0-droppath.json"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    heads = [
        k.removeprefix("val_") for k in next(iter(runs.values()))[0] if k.startswith("val_") and k != "val_mean_top1"
    ]
    lines = [
        "| epoch | run | val mean | " + " | ".join(heads) + " | minutes |",
        "|---" * (len(heads) + 4) + "|",
    ]
    for epoch in range(max(len(history) for history in runs.values())):
        for name, history in runs.items():
            if epoch < len(history):
                e = history[epoch]
                scores = " | ".join(f"{e['val_' + h]:.4f}" for h in heads)
                lines.append(
                    f"| {e['epoch']:.0f} | {name} | {e['val_mean_top1']:.4f} | {scores} | {e['minutes']:.1f} |"
                )
    for name, history in runs.items():
        best = max(history, key=lambda e: e["val_mean_top1"])
        lines.append(f"\n{name}: best epoch {best['epoch']:.0f}, val mean {best['val_mean_top1']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    named = dict(arg.split("=", 1) for arg in sys.argv[1:])
    print(table({name: json.loads(Path(path).read_text()) for name, path in named.items()}))

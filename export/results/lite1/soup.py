"""Validation top-1 per head of training checkpoints and of their weight average (a "model soup").

Before temperature scaling and the memory vote, so it compares weights only. From the repository root:

    .venv/bin/python export/results/lite1/soup.py efficientnet-lite1 runs/lite1-r2 \
        runs/lite1/checkpoints/best.pt runs/lite1-r2/checkpoints/best.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from export.config import ExportConfig
from export.pipeline import Splits, build_model, prepare
from export.train import predict, top1


def score(state: dict[str, torch.Tensor], splits: Splits, config: ExportConfig) -> dict[str, float]:
    model = build_model(splits.train.classes, config, pretrained=False)
    model.load_state_dict(state)
    scores = top1(predict(model.eval(), splits.val.pixels), splits.val)
    return {k: round(v, 4) for k, v in scores.items()} | {"mean": round(float(np.mean(list(scores.values()))), 4)}


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of every floating-point tensor (BatchNorm statistics included); counters from the first."""
    averaged = {}
    for key, first in states[0].items():
        stacked = torch.stack([s[key].float() for s in states])
        averaged[key] = stacked.mean(0).to(first.dtype) if first.is_floating_point() else first
    return averaged


def main() -> None:
    backbone, work, *checkpoints = sys.argv[1:]
    config = ExportConfig.load(Path("export/configs/product-classifier.toml"))
    config.backbone = backbone
    splits = prepare(Path("../shared/data/products"), config, Path(work))
    states = [torch.load(c, map_location="cpu", weights_only=True)["state_dict"] for c in checkpoints]
    for checkpoint, state in zip(checkpoints, states, strict=True):
        print(checkpoint, json.dumps(score(state, splits, config)), flush=True)
    print("average", json.dumps(score(average(states), splits, config)), flush=True)


if __name__ == "__main__":
    main()

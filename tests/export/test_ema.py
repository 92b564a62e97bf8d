"""Weight EMA in training: a shadow copy of the weights that validation scores and the checkpoints keep."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from export.cli import main
from tests.conftest import CATALOGUE

SMOKE = ["--size", "32", "--min-class-count", "2", "--epochs", "2", "--warmup-epochs", "0"]


def test_ema_leaves_training_alone_and_checkpoints_the_averaged_weights(tmp_path: Path) -> None:
    """The same seed with and without EMA: identical training (losses, raw validation), other kept weights."""
    runs = {}
    for decay in ("0", "0.5"):
        work = tmp_path / f"ema-{decay}"
        assert main(["train", "--data", str(CATALOGUE), "--work", str(work), *SMOKE, "--ema-decay", decay]) == 0
        history = json.loads((work / "history.json").read_text())
        last = torch.load(work / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        runs[decay] = (history, last["state_dict"])
    (plain, plain_weights), (ema, ema_weights) = runs["0"], runs["0.5"]
    for off, on in zip(plain, ema, strict=True):
        assert on["train_loss"] == off["train_loss"]
        assert {k: v for k, v in on.items() if k.startswith("val_")} == {
            k: v for k, v in off.items() if k.startswith("val_")
        }
        assert "ema_val_mean_top1" in on and "ema_val_mean_top1" not in off
    assert plain_weights.keys() == ema_weights.keys()
    differ = [k for k, v in plain_weights.items() if v.is_floating_point() and not torch.equal(v, ema_weights[k])]
    assert differ, "with EMA on, the checkpoint should hold the averaged weights, not the raw ones"

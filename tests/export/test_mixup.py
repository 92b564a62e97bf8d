"""Mixup in training: batches blended with a shuffled copy, every head's loss blended by the same weight."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from export.cli import main
from export.train import mix
from tests.conftest import CATALOGUE

SMOKE = ["--size", "32", "--min-class-count", "2", "--epochs", "1", "--warmup-epochs", "0"]


def test_mix_blends_each_image_with_its_partner_by_the_weight() -> None:
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mixed, partner = mix(x, 0.7, torch.Generator().manual_seed(1))
    assert sorted(partner.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, 0.7 * x + 0.3 * x[partner])


def test_a_training_run_with_mixup_trains_on_blended_batches(tmp_path: Path) -> None:
    """The same seed and data with and without mixup: both train, and mixup changes the losses it sees."""
    losses = {}
    for alpha in ("0", "0.4"):
        work = tmp_path / f"mixup-{alpha}"
        assert main(["train", "--data", str(CATALOGUE), "--work", str(work), *SMOKE, "--mixup-alpha", alpha]) == 0
        history = json.loads((work / "history.json").read_text())
        losses[alpha] = history[-1]["train_loss"]
    assert all(loss == loss and loss > 0 for loss in losses.values())  # finite
    assert losses["0"] != losses["0.4"]

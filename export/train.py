"""Fine-tune the multi-head classifier on CPU: head warm-up, then the whole network, with early stopping."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export.config import ExportConfig, TrainConfig
from export.data import IGNORE, Catalogue
from export.network import MultiHeadClassifier
from export.pipeline import Splits, build_model, checkpoint, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where the best weights are and how training went."""

    best_checkpoint: Path
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, float]]
    seconds: float


def seed_everything(seed: int) -> None:
    """Make initialisation, shuffling and augmentation repeatable."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator, fill: float) -> torch.Tensor:
    """Label-preserving geometry only: flips, small scale changes and shifts, padding with white.

    No colour or hue jitter: colour is one of the labels.
    """
    n = x.shape[0]
    lo, hi = cfg.scale_range
    scale = torch.empty(n).uniform_(lo, hi, generator=generator)
    shift = torch.empty(n, 2).uniform_(-cfg.shift_fraction, cfg.shift_fraction, generator=generator) * 2
    flip = torch.ones(n)
    if cfg.hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros: sample (x - fill) so the padding comes out as the white fill value.
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out.contiguous(memory_format=torch.channels_last)


def class_weights(labels: np.ndarray, n_classes: int, power: float) -> torch.Tensor | None:
    """count**-power per class, scaled to mean 1 over the samples; None when power is 0."""
    if power == 0:
        return None
    counts = np.bincount(labels[labels != IGNORE], minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights *= counts.sum() / max((weights * counts).sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def predict(model: MultiHeadClassifier, pixels: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Softmax probabilities per head (after the memory vote, if any) and the embedding (key `embedding`)."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in [*model.head_names, "embedding"]}
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(pixels[start : start + batch_size])
        x = model.normalise(batch).contiguous(memory_format=torch.channels_last)
        logits, embedding = model.answer(x)
        for name, value in logits.items():
            out[name].append(torch.softmax(value, dim=1).numpy())
        out["embedding"].append(embedding.numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def top1(probs: dict[str, np.ndarray], data: Catalogue) -> dict[str, float]:
    """Top-1 accuracy per head over rows whose label is not masked."""
    result: dict[str, float] = {}
    for name, p in probs.items():
        if name not in data.labels:
            continue
        y = data.labels[name]
        keep = y != IGNORE
        result[name] = float((p[keep].argmax(1) == y[keep]).mean()) if keep.any() else float("nan")
    return result


def train(
    model: MultiHeadClassifier,
    train_data: Catalogue,
    val_data: Catalogue,
    config: ExportConfig,
    work: Path,
) -> TrainResult:
    """Train in place; keep `last.pt` and `best.pt` in `work/checkpoints`; return the best epoch's record."""
    cfg = config.train
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt_dir = work / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    generator = torch.Generator().manual_seed(cfg.seed)
    fill = (255.0 - model.mean) / model.std

    specs = {h.column: h for h in config.heads}
    losses = {
        name: nn.CrossEntropyLoss(
            weight=class_weights(
                train_data.labels[name], len(train_data.classes[name]), specs[name].class_weight_power
            ),
            ignore_index=IGNORE,
            label_smoothing=cfg.label_smoothing,
        )
        for name in model.head_names
    }
    head_params = list(model.heads.parameters())
    backbone_params = list(model.backbone.parameters())
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total_epochs = cfg.warmup_epochs + cfg.epochs
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_val = -1.0, -1, {}
    stale = 0
    start = time.monotonic()
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    for epoch in range(total_epochs):
        warm = epoch < cfg.warmup_epochs
        if epoch == 0 or epoch == cfg.warmup_epochs:
            # Phase change: heads alone first (backbone frozen, BN statistics kept), then everything.
            for p in backbone_params:
                p.requires_grad_(not warm)
            groups = [{"params": head_params, "lr": cfg.head_lr}]
            if not warm:
                groups.append({"params": backbone_params, "lr": cfg.backbone_lr})
            optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
            phase_epochs = cfg.warmup_epochs if warm else cfg.epochs
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[cfg.head_lr, cfg.backbone_lr][: len(groups)],
                total_steps=max(1, phase_epochs * steps_per_epoch),
                pct_start=0.15 if not warm else 0.3,
                anneal_strategy="cos",
            )
        assert optimizer is not None and scheduler is not None
        model.train()
        if warm:
            model.backbone.eval()
        order = torch.randperm(len(train_data), generator=generator).numpy()
        running_loss, running_correct, running_seen = 0.0, 0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{total_epochs}{' (heads)' if warm else ''}",
            unit="batch",
            leave=False,
            mininterval=2.0,
        )
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = model.normalise(torch.from_numpy(train_data.pixels[idx]))
            x = augment(x, cfg, generator, fill)
            logits, _ = model.forward_features(x)
            loss = torch.zeros(())
            for name in model.head_names:
                y = torch.from_numpy(train_data.labels[name][idx])
                if (y != IGNORE).any():  # a batch with no label for this head adds nothing (not NaN)
                    loss = loss + specs[name].loss_weight * losses[name](logits[name], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            first = model.head_names[0]
            y0 = train_data.labels[first][idx]
            running_loss += loss.item() * len(idx)
            running_correct += int((logits[first].argmax(1).numpy() == y0)[y0 != IGNORE].sum())
            running_seen += len(idx)
            bar.set_postfix(loss=f"{running_loss / running_seen:.3f}", acc=f"{running_correct / running_seen:.3f}")
        bar.close()

        val = top1(predict(model, val_data.pixels), val_data)
        score = float(np.nanmean(list(val.values())))
        record = {
            "epoch": epoch + 1,
            "train_loss": running_loss / max(running_seen, 1),
            "val_mean_top1": score,
            **{f"val_{k}": v for k, v in val.items()},
        }
        record["minutes"] = (time.monotonic() - start) / 60
        history.append(record)
        (work / "history.json").write_text(json.dumps(history, indent=2))
        log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in record.items()}))
        state = {**checkpoint(model, train_data.classes, config), "epoch": epoch + 1, "val": val}
        torch.save(state, ckpt_dir / "last.pt")
        if score > best_score:
            best_score, best_epoch, best_val, stale = score, epoch + 1, val, 0
            torch.save(state, ckpt_dir / "best.pt")
        elif not warm:
            stale += 1
            if stale >= cfg.patience:
                log.info("early stop: no validation improvement for %d epochs", stale)
                break
        if cfg.max_minutes is not None and (time.monotonic() - start) / 60 > cfg.max_minutes:
            log.info("time budget of %.1f minutes reached", cfg.max_minutes)
            break

    best = torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return TrainResult(ckpt_dir / "best.pt", best_epoch, best_val, history, time.monotonic() - start)


def run_train(splits: Splits, config: ExportConfig, work: Path) -> None:
    """Fine-tune and keep the best checkpoint in `work`."""
    model = build_model(splits.train.classes, config, pretrained=config.train.init_from is None)
    if config.train.init_from is not None:  # strict: same backbone, heads and classes as that run
        state = load_checkpoint(model, config.train.init_from, splits.train.classes, config)
        log.info("continuing from %s (epoch %s)", config.train.init_from, state.get("epoch"))
    result = train(model, splits.train, splits.val, config, work)
    log.info(
        "best epoch %d of %d in %.1f min: %s",
        result.best_epoch,
        len(result.history),
        result.seconds / 60,
        {k: round(v, 4) for k, v in result.best_val.items()},
    )

"""Can training run faster on this CPU? One training step in eager FP32, BF16 autocast and torch.compile.

Run from the repository root (about five minutes on 2 cores, most of it torch.compile's first step):

    .venv/bin/python export/results/train_step.py [--backbone efficientnet-lite0] [--batch 64] [--size 128]

The development machine's CPU has AMX and AVX-512 BF16 units (`lscpu`), so BF16 autocast might speed up
the convolutions, and torch.compile (inductor) might fuse the many small element-wise layers of an
EfficientNet-Lite. Each mode trains the whole network of the default recipe (seven heads of the catalogue's
sizes, AdamW) on random input of the training shape, in channels-last as `export.train` does; the modes
take turns in rounds, and the table gives each mode's median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from export.network import build_efficientnet_classifier

# The default model's heads and class counts (models/product-classifier/3/model.json).
HEADS = {
    "articleType": 84,
    "subCategory": 30,
    "masterCategory": 5,
    "baseColour": 37,
    "gender": 5,
    "season": 4,
    "usage": 5,
}
MODES = ("eager FP32", "eager BF16 autocast", "torch.compile FP32")


def stepper(mode: str, backbone: str, batch: int, size: int) -> Callable[[], None]:
    """One mode's training step, on its own copy of the network and optimiser."""
    torch.manual_seed(0)
    model = build_efficientnet_classifier(HEADS, backbone=backbone).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = {name: torch.randint(0, n, (batch,)) for name, n in HEADS.items()}
    forward = torch.compile(model.forward_features) if "compile" in mode else model.forward_features
    bf16 = "BF16" in mode

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            logits, _ = forward(x)
            loss = sum(F.cross_entropy(logits[name].float(), y[name]) for name in HEADS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per mode and round")
    args = parser.parse_args()

    steps, first = {}, {}
    for mode in MODES:
        steps[mode] = stepper(mode, args.backbone, args.batch, args.size)
        started = time.perf_counter()
        steps[mode]()  # torch.compile compiles here
        steps[mode]()
        first[mode] = time.perf_counter() - started
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            started = time.perf_counter()
            for _ in range(args.steps):
                steps[mode]()
            times[mode].append((time.perf_counter() - started) / args.steps)

    print(
        f"{args.backbone}, {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print("| mode | first two steps (s) | ms per step (median) | img/s | x eager FP32 | rounds (ms) |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(times[MODES[0]])
    for mode in MODES:
        median = statistics.median(times[mode])
        rounds = " ".join(f"{1000 * t:.0f}" for t in times[mode])
        print(
            f"| {mode} | {first[mode]:.1f} | {1000 * median:.0f} | {args.batch / median:.0f} "
            f"| {base / median:.2f} | {rounds} |"
        )


if __name__ == "__main__":
    main()

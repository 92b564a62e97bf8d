r"""How validation top-1 grows with the number of training photos, and how many photos each goal would take.

    python export/results/learning_curve.py 5357=runs/lc-25/history.json 10714=runs/lc-50/history.json \
        21428=export/results/backbone-lr/history.json [--plot learning-curve.png]

Each argument is a training run's photo count and its history.json; each run is read at its best epoch (the
checkpoint training keeps). Per head, the error (1 - top-1) is fitted as a power law of the photo count,
error = a * photos ** -b (a straight line through the log-log points, `numpy.polyfit`), and extrapolated:
the top-1 at twice the largest count, and the photo count at which the fit reaches issue #2's goal. Those
goals are top-1 on the blind hold-out, which reads about a point below our validation split for article type
(version 4: 0.879 validation, 0.868 test), so the counts are a lower bound.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from history_table import best_epoch, load
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from export.card import markdown_table

# Issue #2's goals: top-1 on the blind hold-out, per CSV column.
GOALS = {
    "articleType": 0.90,
    "subCategory": 0.965,
    "masterCategory": 0.99,
    "baseColour": 0.72,
    "gender": 0.91,
    "season": 0.74,
    "usage": 0.91,
}


def fit(photos: list[int], top1: list[float]) -> tuple[float, float]:
    """(a, b) of error = a * photos ** -b, least squares in log-log."""
    slope, intercept = np.polyfit(np.log(photos), np.log(1.0 - np.asarray(top1)), 1)
    return math.exp(intercept), -slope


def fits(runs: dict[int, dict[str, float]]) -> dict[str, tuple[list[float], float, float]]:
    """Per head with a goal: its top-1 at each photo count (ascending) and the fit's (a, b)."""
    photos = sorted(runs)
    out = {}
    for head in GOALS:
        if f"val_{head}" in runs[photos[0]]:
            top1 = [runs[n][f"val_{head}"] for n in photos]
            out[head] = (top1, *fit(photos, top1))
    return out


def photos_for(goal: float, a: float, b: float) -> float:
    """Photos at which the fitted error reaches 1 - goal (infinite when the error does not fall)."""
    return (a / (1.0 - goal)) ** (1.0 / b) if b > 0 else math.inf


def table(runs: dict[int, dict[str, float]], fitted: dict[str, tuple[list[float], float, float]]) -> str:
    photos = sorted(runs)
    rows = []
    for head, (top1, a, b) in fitted.items():
        needed = photos_for(GOALS[head], a, b)
        reached = top1[-1] >= GOALS[head]
        rows.append(
            [
                head,
                *(f"{t:.4f}" for t in top1),
                f"{b:.3f}",
                f"{1 - a * (2 * photos[-1]) ** -b:.4f}",
                f"{GOALS[head]:.3f}",
                "reached" if reached else f"{needed:,.0f} ({needed / photos[-1]:.1f}x)",
            ]
        )
    columns = [f"{n:,} photos" for n in photos]
    return "\n".join(
        markdown_table(
            ["head", *columns, "exponent b", f"fit at {2 * photos[-1]:,}", "goal", "photos for the goal"], rows
        )
    )


def plot(photos: list[int], fitted: dict[str, tuple[list[float], float, float]], path: Path) -> None:
    """Error against photos on log-log axes per head: the runs, the fit out to 8x, and the goal."""
    figure = Figure(figsize=(11, 6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, (len(fitted) + 1) // 2, squeeze=False).ravel()
    reach = np.geomspace(photos[0], 8 * photos[-1], 50)
    for ax, (head, (top1, a, b)) in zip(axes, fitted.items(), strict=False):
        ax.loglog(photos, [1 - t for t in top1], "o", label="validation")
        ax.loglog(reach, a * reach**-b, "-", lw=1, label=f"fit, b = {b:.2f}")
        ax.axhline(1 - GOALS[head], color="tab:red", ls="--", lw=1, label="goal")
        ax.set_title(head, fontsize=10)
        ax.set_xlabel("training photos", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(fitted) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("error (1 - top-1)")
    figure.suptitle("Lite0 first stage: validation error against training photos")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args.pop(args.index("--plot") + 1)) if "--plot" in args else None
    if out is not None:
        args.remove("--plot")
    if len(args) < 2 or not all("=" in arg for arg in args):
        raise SystemExit(__doc__)
    named = dict(arg.split("=", 1) for arg in args)
    runs = {int(count): best_epoch(load(path)) for count, path in named.items()}
    fitted = fits(runs)
    print(table(runs, fitted))
    if out is not None:
        plot(sorted(runs), fitted, out)

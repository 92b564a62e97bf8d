"""Would better colour histograms make the colour stack worth building? Feature sets and strengths compared.

Run from the repository root (3.5 minutes on 2 cores alone, nine while a training run shared them):

    .venv/bin/python export/results/colour_histograms.py --work runs/product-classifier \
        --model models/product-classifier/4/model.int8.onnx

`export.posthoc` stacks a logistic regression on square-rooted RGB histograms (6 bins per channel) of
each photo's non-white pixels onto the colour head: +0.5 on validation, +0.6 on test for version 4. This
script asks whether other histograms do better: 8 bins per channel, a hue/saturation/value histogram
(12 x 4 x 4, plus 8 grey levels of the unsaturated pixels), and both RGB and HSV; each at three strengths
(C) of the regression. The regression is fitted on the training split; its weight in the stack is chosen
on validation, then read once on test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits
from sklearn.linear_model import LogisticRegression

from app.runtime import softmax
from export.card import markdown_table
from export.convert import onnx_outputs
from export.data import IGNORE
from export.pipeline import check_split
from export.posthoc import WHITE, colour_histograms, regression_log_probs, top1

HEAD = "baseColour"
STRENGTHS = (1.0, 3.0, 10.0)
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)


def hsv_histograms(pixels: np.ndarray, hue: int = 12, saturation: int = 4, value: int = 4) -> np.ndarray:
    """Square-rooted joint HSV histogram of each image's non-white pixels, and 8 grey levels of its unsaturated ones.

    The conversion is written out in float32 on 0-255 values: `matplotlib.colors.rgb_to_hsv` (on 0-1 values, float64)
    rounds differently at the bin edges, which whole-valued pixels often hit, and moves pixels between bins.
    """
    bins = hue * saturation * value
    out = np.zeros((len(pixels), bins + 8), dtype=np.float32)
    for i, image in enumerate(pixels):
        rgb = image[::2, ::2].reshape(-1, 3).astype(np.float32)
        foreground = rgb[(rgb < WHITE).any(axis=1)]
        rgb = foreground if len(foreground) else rgb
        high, low = rgb.max(axis=1), rgb.min(axis=1)
        spread = np.maximum(high - low, 1e-6)
        r, g, b = rgb.T
        h = (
            np.select(
                [high == low, high == r, high == g],
                [0.0, ((g - b) / spread) % 6, (b - r) / spread + 2],
                default=(r - g) / spread + 4,
            )
            / 6
        )
        s = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
        v = high / 255
        h_bin = np.minimum((h * hue).astype(int), hue - 1)
        s_bin = np.minimum((s * saturation).astype(int), saturation - 1)
        v_bin = np.minimum((v * value).astype(int), value - 1)
        out[i, :bins] = np.bincount((h_bin * saturation + s_bin) * value + v_bin, minlength=bins) / len(rgb)
        out[i, bins:] = np.bincount(np.minimum((v * 8).astype(int), 7)[s < 0.15], minlength=8) / len(rgb)
    return np.sqrt(out)


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "RGB, 6 bins per channel (export.posthoc's)": lambda p: colour_histograms(p, 6),
    "RGB, 8 bins per channel": lambda p: colour_histograms(p, 8),
    "HSV 12x4x4 + 8 grey levels": hsv_histograms,
    "both RGB 6 and HSV": lambda p: np.hstack([colour_histograms(p, 6), hsv_histograms(p)]),
}


def main() -> int:
    parser = catalogue_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/product-classifier/4/model.int8.onnx"))
    args = parser.parse_args()
    _, splits = catalogue_splits(args)
    for subset in ("val", "test"):
        check_split(args.model.parent, subset, getattr(splits, subset))
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    y = {name: part.labels[HEAD] for name, part in parts.items()}
    served = {name: np.log(softmax(onnx_outputs(args.model, parts[name].pixels)[HEAD])) for name in ("val", "test")}
    classes = served["val"].shape[1]
    rows: list[list[object]] = [
        [
            "none (as served)",
            "-",
            "-",
            "-",
            f"{top1(served['val'], y['val']):.4f}",
            f"{top1(served['test'], y['test']):.4f}",
        ]
    ]
    keep = y["train"] != IGNORE
    for name, features in FEATURES.items():
        x = {split: features(part.pixels) for split, part in parts.items()}
        for strength in STRENGTHS:
            regression = LogisticRegression(C=strength, max_iter=500).fit(x["train"][keep], y["train"][keep])
            stacked = {split: regression_log_probs(regression, x[split], classes) for split in ("val", "test")}
            scores = {w: top1(served["val"] + w * stacked["val"], y["val"]) for w in WEIGHTS}
            weight = max(scores, key=lambda w: scores[w])
            rows.append(
                [
                    name,
                    f"{strength:g}",
                    f"{top1(stacked['val'], y['val']):.4f}",
                    f"{weight:g}",
                    f"{scores[weight]:.4f}",
                    f"{top1(served['test'] + weight * stacked['test'], y['test']):.4f}",
                ]
            )
    header = ["histograms", "C", "regression alone (val)", "weight", "stacked, val", "stacked, test"]
    sys.stdout.write("\n".join(markdown_table(header, rows)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

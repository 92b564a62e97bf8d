"""How often the catalogue gives one photo two different labels: label noise, and photos shared by variants.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python export/results/label_agreement.py --work runs/product-classifier \
        --model models/product-classifier/3/model.int8.onnx

Candidate pairs are each photo's most similar photos by the model's embedding. Two rules then call a pair
the same photo:
- the blind hold-out's: mean absolute pixel difference (0-255, at the model's input size) under 3. On a
  white background a small product changes few pixels, so this also pairs colour variants shot alike;
- a strict one: fewer than 0.05 % of the pixels differ by more than 40 in any channel.

A deterministic model answers both photos of a strict pair alike, so where their labels differ it is right
on at most one of them. With independent label errors at rate e per photo, two copies of a photo disagree
at about 2e(1 - e); half the disagreement rate is then a rough label error rate. Where the catalogue uses
one photo for several variants (colours of a sandal, shades of a lipstick), the disagreement is not noise
but information that the photo does not hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits

from export.convert import onnx_outputs
from export.data import IGNORE
from export.posthoc import NEAR_DUPLICATE_MAD, mask_near_duplicates

STRICT_CHANGED_SHARE = 0.0005  # below this share of changed pixels, two photos are one


def near_duplicate_pairs(pixels: np.ndarray, embedding: np.ndarray, *, candidates: int = 8) -> np.ndarray:
    """(i, j) index pairs, i < j, of photos closer than NEAR_DUPLICATE_MAD among each photo's nearest."""
    unit = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(unit), 1024):
        similarity = unit[start : start + 1024] @ unit.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # not itself
        masked = mask_near_duplicates(
            similarity, pixels[start : start + len(similarity)], pixels, candidates=candidates
        )
        for row, j in zip(*np.nonzero(np.isneginf(masked) & ~np.isneginf(similarity)), strict=True):
            i = start + int(row)
            pairs.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def changed_share(a: np.ndarray, b: np.ndarray, *, level: int = 40) -> float:
    """The share of pixels where two HWC images differ by more than `level` in some channel."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > level).mean())


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="an ONNX file with an `embedding` output")
    args = parser.parse_args()
    _, splits = catalogue_splits(args)
    parts = (splits.train, splits.val, splits.test)
    pixels = np.concatenate([p.pixels for p in parts])
    labels = {head: np.concatenate([p.labels[head] for p in parts]) for head in splits.train.labels}
    embedding = onnx_outputs(args.model, pixels)["embedding"]
    near = near_duplicate_pairs(pixels, embedding)
    changed = np.array([changed_share(pixels[i], pixels[j]) for i, j in near])
    strict = near[changed < STRICT_CHANGED_SHARE]
    print(f"{len(pixels)} photos\n")
    for rule, pairs in ((f"MAD < {NEAR_DUPLICATE_MAD:g} (the hold-out's rule)", near), ("strict", strict)):
        print(f"{rule}: {len(pairs)} pairs over {len(np.unique(pairs))} photos\n")
        print("| column | pairs labelled on both | labels differ | share | label error rate, roughly |")
        print("|---|---|---|---|---|")
        for head, y in labels.items():
            a, b = y[pairs[:, 0]], y[pairs[:, 1]]
            both = (a != IGNORE) & (b != IGNORE)
            differ = int((a[both] != b[both]).sum())
            share = differ / max(int(both.sum()), 1)
            print(f"| {head} | {int(both.sum())} | {differ} | {share:.3f} | {share / 2:.3f} |")
        print()


if __name__ == "__main__":
    main()

"""Top-1 per head on the test photos that the blind hold-out's rule would have kept: no near-copy in training.

Run from the repository root (about two minutes on 2 cores):

    .venv/bin/python export/results/holdout_like.py --work runs/product-classifier \
        --model models/product-classifier/4/model.int8.onnx --embedding models/product-classifier/3/model.int8.onnx

The hold-out was separated so that no shared photo lies within a mean absolute pixel difference of 3 (of
255) of a hold-out photo; our test split was not. A test photo with such a near-copy among the training
photos is easier (the model has seen it, often with its labels), so the hold-out is judged more like the
rest of the test split. Near-copies are searched among each photo's most similar photos by the embedding
of `--embedding` (as in `label_agreement.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits
from label_agreement import near_duplicate_pairs

from export.convert import onnx_outputs, read_onnx_metadata
from export.data import IGNORE
from export.pipeline import file_probabilities


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="the ONNX file to score")
    parser.add_argument("--embedding", type=Path, required=True, help="an ONNX file with an `embedding` output")
    args = parser.parse_args()
    _, splits = catalogue_splits(args)
    train, test = splits.train, splits.test
    pixels = np.concatenate([train.pixels, test.pixels])
    pairs = near_duplicate_pairs(pixels, onnx_outputs(args.embedding, pixels)["embedding"], candidates=16)
    across = pairs[(pairs[:, 0] < len(train)) & (pairs[:, 1] >= len(train))]
    copied = np.zeros(len(test), dtype=bool)
    copied[np.unique(across[:, 1] - len(train))] = True
    print(
        f"{copied.sum()} of {len(test)} test photos ({copied.mean():.1%}) have a near-copy among the training photos\n"
    )
    heads = read_onnx_metadata(args.model).heads
    probs = file_probabilities(args.model, {h.name: h.output for h in heads}, test.pixels)
    print("| head | all test photos | without a near-copy (hold-out-like) | with one |")
    print("|---|---|---|---|")
    for head, p in probs.items():
        right = p.argmax(axis=1) == test.labels[head]
        labelled = test.labels[head] != IGNORE
        cells = [right[labelled & rows].mean() for rows in (np.ones_like(copied), ~copied, copied)]
        print(f"| {head} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


if __name__ == "__main__":
    main()

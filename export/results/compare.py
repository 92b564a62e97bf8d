"""Top-1 per head of packaged INT8 models, as the service runs them, on the validation and test splits.

Run from the repository root, naming the model version folders to compare, for example:

    .venv/bin/python export/results/compare.py --work runs/lite1-r2 models/product-classifier/3 \
        runs/members/product-classifier/4

The splits are the default config's (seed 1234), read through a work folder's cached catalogue (--work).
Photos whose class was masked (too rare) do not count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits

from export.convert import onnx_outputs
from export.train import top1


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("folders", type=Path, nargs="+", help="model version folders (with model.int8.onnx)")
    args = parser.parse_args()
    config, splits = catalogue_splits(args)
    heads = [h.column for h in config.heads]
    print("| split | model | " + " | ".join(heads) + " | mean |")
    print("|---" * (len(heads) + 3) + "|")
    for split_name in ("val", "test"):
        data = getattr(splits, split_name)
        for folder in args.folders:
            scores = top1(onnx_outputs(folder / "model.int8.onnx", data.pixels), data)
            cells = " | ".join(f"{scores[h]:.4f}" for h in heads)
            print(f"| {split_name} | {folder} | {cells} | {np.mean([scores[h] for h in heads]):.4f} |")


if __name__ == "__main__":
    main()

"""Would answering article type consistently with the sub- and master-category heads help? Top-1 when each
article type's score adds `a` times its sub-category's and `b` times its master category's log-probability.

Run from the repository root on a packaged version folder, for example:

    .venv/bin/python export/results/hierarchy.py --work runs/lite1-r2 models/product-classifier/4

Each article type's sub- and master category is the one most of its training photos carry. Also printed:
how often the article head's answer and the sub-category head's answer disagree on that map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits
from scipy.special import log_softmax

from export.convert import onnx_outputs
from export.data import IGNORE

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def parent_map(child: np.ndarray, parent: np.ndarray, n_child: int) -> np.ndarray:
    """For each child class, the parent class most of its training rows carry."""
    table = np.zeros((n_child, int(parent.max()) + 1), np.int64)
    keep = (child != IGNORE) & (parent != IGNORE)
    np.add.at(table, (child[keep], parent[keep]), 1)
    return np.asarray(table.argmax(1))


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("folder", type=Path, help="model version folder (with model.int8.onnx)")
    args = parser.parse_args()
    _, splits = catalogue_splits(args)
    article, sub, master = "articleType", "subCategory", "masterCategory"
    n = len(splits.train.classes[article])
    to_sub = parent_map(splits.train.labels[article], splits.train.labels[sub], n)
    to_master = parent_map(splits.train.labels[article], splits.train.labels[master], n)
    print("| split | a (sub) | b (master) | article top-1 | sub from the article | master from the article |")
    print("|---|---|---|---|---|---|")
    for split_name in ("val", "test"):
        data = getattr(splits, split_name)
        out = onnx_outputs(args.folder / "model.int8.onnx", data.pixels)
        logp = {h: log_softmax(out[h], axis=1) for h in (article, sub, master)}  # outputs: logits or log-probs
        disagree = float((to_sub[logp[article].argmax(1)] != logp[sub].argmax(1)).mean())
        print(f"| {split_name} | head answers disagree on {disagree:.2%} of photos | | | | |")
        for a in WEIGHTS:
            for b in WEIGHTS[:3]:
                best = (logp[article] + a * logp[sub][:, to_sub] + b * logp[master][:, to_master]).argmax(1)
                cells = []
                for head, answer in ((article, best), (sub, to_sub[best]), (master, to_master[best])):
                    y = data.labels[head]
                    cells.append(f"{(answer[y != IGNORE] == y[y != IGNORE]).mean():.4f}")
                print(f"| {split_name} | {a} | {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

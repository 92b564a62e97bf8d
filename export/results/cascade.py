"""Would a cascade serve version 4 faster at the same accuracy? Member 1 (version 3, Lite0) answers alone the
photos it is sure of, and only the others pay for member 2 (Lite1) and the ensemble's mean.

Run from the repository root, for example:

    .venv/bin/python export/results/cascade.py models/product-classifier/3 models/product-classifier/4

Both folders' INT8 files run on the validation and test splits; for each gate (member 1's top-1 score on
chosen heads at or above a threshold) it prints the share of photos that would skip member 2 and every head's
top-1 with member 1's answer for those photos and the ensemble's for the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from catalogue_args import catalogue_parser, catalogue_splits

from app.repository import ModelVersion
from app.runtime import Runtime
from app.schema import ModelMetadata
from export.data import IGNORE, Catalogue

# (article, colour, season) thresholds; 0 leaves a head out of the gate.
GATES = [(t, 0.0, 0.0) for t in (0.8, 0.9, 0.95, 0.97, 0.99)] + [
    (0.95, 0.5, 0.5),
    (0.95, 0.7, 0.7),
    (0.9, 0.8, 0.8),
    (0.95, 0.8, 0.8),
]


def probabilities(folder: Path, data: Catalogue) -> dict[str, np.ndarray]:
    """Each head's probabilities for every photo, from the INT8 file as the service runs it."""
    version = ModelVersion(folder, ModelMetadata.read(folder))
    runtime = Runtime(version, precision="int8", providers="cpu", intra_op_threads=2)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), 64):
        out = runtime.run(data.pixels[start : start + 64])
        for head in runtime.metadata.heads:
            parts.setdefault(head.name, []).append(out[head.output])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def top1(probs: dict[str, np.ndarray], data: Catalogue) -> dict[str, float]:
    out = {}
    for head, p in probs.items():
        y = data.labels[head]
        keep = y != IGNORE
        out[head] = float((p.argmax(1)[keep] == y[keep]).mean())
    return out


def main() -> None:
    parser = catalogue_parser(__doc__)
    parser.add_argument("member", type=Path, help="the first member's version folder (version 3)")
    parser.add_argument("ensemble", type=Path, help="the ensemble's version folder (version 4)")
    args = parser.parse_args()
    _, splits = catalogue_splits(args)
    for split_name in ("val", "test"):
        data = getattr(splits, split_name)
        first, both = probabilities(args.member, data), probabilities(args.ensemble, data)
        heads = list(both)
        print(f"\n{split_name} ({len(data)} photos)\n")
        print("| gate (article, colour, season) | skip member 2 | " + " | ".join(heads) + " | mean |")
        print("|---|---|" + "---|" * (len(heads) + 1))
        for label, probs in (("member 1 alone", first), ("ensemble (version 4)", both)):
            scores = top1(probs, data)
            print(
                f"| {label} | - | "
                + " | ".join(f"{scores[h]:.4f}" for h in heads)
                + f" | {np.mean(list(scores.values())):.4f} |"
            )
        for gate in GATES:
            sure = np.ones(len(data), bool)
            for head, threshold in zip(("articleType", "baseColour", "season"), gate, strict=True):
                if threshold:
                    sure &= first[head].max(1) >= threshold
            mixed = {h: np.where(sure[:, None], first[h], both[h]) for h in heads}
            scores = top1(mixed, data)
            print(
                f"| {gate} | {sure.mean():.3f} | "
                + " | ".join(f"{scores[h]:.4f}" for h in heads)
                + f" | {np.mean(list(scores.values())):.4f} |"
            )


if __name__ == "__main__":
    main()

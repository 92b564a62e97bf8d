"""Top-1 per head of packaged INT8 models, as the service runs them, on the validation and test splits.

Run from the repository root, naming the model version folders to compare, for example:

    .venv/bin/python export/results/compare.py models/product-classifier/3 /tmp/lite1-r2/product-classifier/4

The splits are the default config's (seed 1234), read through a work folder's cached catalogue (--work).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.config import ExportConfig
from export.pipeline import prepare


def top1(folder: Path, pixels: np.ndarray, labels: dict[str, np.ndarray], heads: list[str]) -> dict[str, float]:
    """Top-1 per head of `folder`'s INT8 file; photos whose class was masked (too rare) do not count."""
    session = ort.InferenceSession(str(folder / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    predicted: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    for start in range(0, len(pixels), 256):
        outputs = session.run(heads, {"pixels": pixels[start : start + 256]})
        for head, output in zip(heads, outputs, strict=True):
            predicted[head].append(output.argmax(1))
    scores = {}
    for head in heads:
        known = labels[head] >= 0
        scores[head] = round(float((np.concatenate(predicted[head])[known] == labels[head][known]).mean()), 4)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="model version folders (with model.int8.onnx)")
    parser.add_argument("--config", type=Path, default=Path("export/configs/product-classifier.toml"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/products"))
    parser.add_argument("--work", type=Path, default=Path("runs/product-classifier"))
    args = parser.parse_args()
    config = ExportConfig.load(args.config)
    splits = prepare(args.data, config, args.work)
    heads = [h.column for h in config.heads]
    print("| split | model | " + " | ".join(heads) + " | mean |")
    print("|---" * (len(heads) + 3) + "|")
    for split_name in ("val", "test"):
        data = getattr(splits, split_name)
        for folder in args.folders:
            scores = top1(folder, data.pixels, data.labels, heads)
            mean = float(np.mean(list(scores.values())))
            print(f"| {split_name} | {folder} | " + " | ".join(f"{scores[h]:.4f}" for h in heads) + f" | {mean:.4f} |")


if __name__ == "__main__":
    main()

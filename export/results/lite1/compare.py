"""Top-1 per head of two packaged INT8 models on the validation and test splits.

The default (version 3) against the Lite1 experiment, packaged as version 4 under models/product-classifier/4
for the comparison. Run from the repository root: .venv/bin/python export/results/lite1/compare.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.config import ExportConfig
from export.pipeline import prepare

VERSIONS = (3, 4)


def main() -> None:
    config = ExportConfig.load(Path("export/configs/product-classifier.toml"))
    splits = prepare(Path("../shared/data/products"), config, Path("runs/lite1"))
    heads = [h.column for h in config.heads]
    for split_name in ("val", "test"):
        data = getattr(splits, split_name)
        for version in VERSIONS:
            path = f"models/product-classifier/{version}/model.int8.onnx"
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            predicted: dict[str, list[np.ndarray]] = {h: [] for h in heads}
            for start in range(0, len(data.pixels), 256):
                outputs = session.run(heads, {"pixels": data.pixels[start : start + 256]})
                for head, output in zip(heads, outputs, strict=True):
                    predicted[head].append(output.argmax(1))
            top1 = {}
            for head in heads:
                labels = data.labels[head]
                known = labels >= 0  # photos whose class was masked (too rare) do not count
                top1[head] = round(float((np.concatenate(predicted[head])[known] == labels[known]).mean()), 4)
            print(split_name, f"v{version}", top1, "mean", round(float(np.mean(list(top1.values()))), 4))


if __name__ == "__main__":
    main()

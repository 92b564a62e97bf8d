"""The worked example of docs/own-model.md: a small Keras CNN trained on Fashion-MNIST and exported to ONNX.

`python -m export.keras_example --out fashion.onnx` trains the network (Keras 3 on its torch backend), writes
the ONNX file and the labels file next to it; `vitrine export import` then packages it for the service.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from export import fashion_mnist

log = logging.getLogger(__name__)


def keras_module() -> Any:
    """Keras 3 on the torch backend (the export extra's CPU torch), unless KERAS_BACKEND says otherwise."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def build(keras: Any) -> Any:
    """Conv2D(32, 3x3, relu), MaxPooling2D(2x2), Flatten, Dense(10, softmax); adam, categorical cross-entropy."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name="image"),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def train(
    out: Path, *, limit: int | None = None, epochs: int = 1, seed: int = 0, folder: Path = fashion_mnist.DEBIAN_FOLDER
) -> dict[str, float]:
    """Train on the first `limit` training images, export `out` (ONNX) and `out`.labels.txt; return the
    accuracy on the test split's first 1,000 images."""
    keras = keras_module()
    keras.utils.set_random_seed(seed)
    images, labels = fashion_mnist.load("train", folder)
    test_images, test_labels = fashion_mnist.load("t10k", folder)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = build(keras)
    # Pixels scaled to [0, 1] outside the network, as in Keras' own examples: the import says so (`unit`).
    x = images[..., None].astype(np.float32) / 255
    model.fit(x, keras.utils.to_categorical(labels, 10), epochs=epochs, batch_size=64, verbose=0)
    test_x = test_images[:1000, ..., None].astype(np.float32) / 255
    _, accuracy = model.evaluate(test_x, keras.utils.to_categorical(test_labels[:1000], 10), verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.export(str(out), format="onnx")
    labels_file = out.with_suffix(".labels.txt")
    labels_file.write_text("\n".join(fashion_mnist.LABELS) + "\n", encoding="utf-8")
    log.info("trained on %d images for %d epoch(s): test accuracy %.3f; wrote %s", len(x), epochs, accuracy, out)
    return {"accuracy": float(accuracy), "images": float(len(x))}


def main(argv: list[str] | None = None) -> int:
    """Command line of the example."""
    parser = argparse.ArgumentParser(prog="python -m export.keras_example", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--limit", type=int, help="train on this many images only (default all 60,000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", type=Path, default=fashion_mnist.DEBIAN_FOLDER, help="the IDX files' folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train(args.out, limit=args.limit, epochs=args.epochs, folder=args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fashion-MNIST as Debian's `dataset-fashion-mnist` package installs it: IDX files read into numpy arrays."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array: [n, 28, 28] images or [n] labels."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise ValueError(f"{path}: not an IDX image or label file (magic {magic})")
    dims = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape}")
    return data.reshape(shape)


def load(split: str, folder: Path = DEBIAN_FOLDER) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 28, 28] and labels [n] of the `train` or `t10k` split."""
    if split not in ("train", "t10k"):
        raise ValueError(f"split is train or t10k, not {split!r}")
    images = read_idx(folder / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{split}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in {split}")
    return images, labels


def png(image: np.ndarray) -> bytes:
    """One 28x28 grayscale image as PNG bytes, as a client would send it."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()

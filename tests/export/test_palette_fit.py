"""`vitrine export palette`: shades learned from labelled photos, the naming tuned, palette.json written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.palette import Namer, Shades, to_lab
from app.schema import ModelMetadata
from export.data import Catalogue
from export.palette_fit import colour_head, fit_palette
from tests.tiny_model import HEADS, make_pooled_version

COLOURS = {"Navy Blue": (31, 42, 68), "Red": (200, 30, 40), "Black": (15, 15, 18)}
SKIN = (224, 172, 140)  # worn by a model: in every third photo, whatever the product's colour


def catalogue(n: int, seed: int) -> Catalogue:
    """`n` 32-pixel photos: a square of the labelled colour (its shade varying) on white, some with skin."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(COLOURS), n)
    pixels = np.full((n, 32, 32, 3), 255, dtype=np.uint8)
    for i, k in enumerate(labels):
        colour = np.array(list(COLOURS.values())[k]) + rng.integers(-8, 9, 3)
        pixels[i, 4:28, 4:28] = np.clip(colour, 0, 255)
        if i % 3 == 0:
            pixels[i, 4:12, 4:28] = SKIN
    head = next(h for h in HEADS if h.name == "baseColour")
    classes = list(COLOURS)
    return Catalogue(
        ids=[str(i) for i in range(n)],
        pixels=pixels,
        labels={head.name: labels.astype(np.int64)},
        classes={head.name: classes},
    )


def test_learns_each_colours_shade_and_names_held_out_photos(tmp_path: Path) -> None:
    folder = make_pooled_version(tmp_path / "1")
    figures = fit_palette(folder, catalogue(90, 0), catalogue(30, 1), catalogue(30, 2), precision="fp32")
    shades = Shades.read(folder)
    assert shades is not None and shades.head == "baseColour" and set(shades.names) == set(COLOURS)
    for name, rgb in COLOURS.items():
        nearest = min(
            np.linalg.norm(np.array(s.lab) - to_lab(np.array(rgb, dtype=np.uint8))) for s in shades.names[name]
        )
        assert nearest < 6  # the labelled colour, not the skin beside it
    assert figures["test.photos"] == 30
    assert figures["test.named"] >= 0.95
    assert 0 <= figures["test.head_top1"] <= 1
    Namer(shades, colour_head(ModelMetadata.read(folder)).labels)  # loadable by the service for the model's head


def test_a_model_without_a_colour_head_is_refused(tmp_path: Path) -> None:
    meta = ModelMetadata.read(make_pooled_version(tmp_path / "1"))
    plain = meta.model_copy(update={"heads": [h for h in meta.heads if h.key != "colour"]})
    with pytest.raises(ValueError, match="no colour head"):
        colour_head(plain)

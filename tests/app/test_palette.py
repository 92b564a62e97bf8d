"""The palette: product pixels only, clustered in Lab, named with learned shades and the colour head."""

from __future__ import annotations

import csv
import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from app.palette import MAX_COLOURS, Namer, Shade, Shades, palette, product_pixels, swatches, to_lab
from app.preprocess import decode
from app.runtime import softmax
from app.schema import ModelMetadata, Preprocessing
from tests.conftest import CATALOGUE, ROOT

# the default model: the highest version in the tree
DEFAULT = max((ROOT / "models" / "product-classifier").glob("[0-9]*"), key=lambda p: int(p.name))
LABELS = ["Black", "White", "Navy Blue", "Red", "Multi"]
SPEC = Preprocessing(size=64)


def shades(**update: float) -> Shades:
    made = Shades(
        head="baseColour",
        names={
            "Black": [Shade(lab=(10, 0, 0), weight=1)],
            "White": [Shade(lab=(95, 0, 0), weight=1)],
            "Navy Blue": [Shade(lab=(20, 5, -25), weight=1)],
            "Red": [Shade(lab=(45, 60, 40), weight=0.7), Shade(lab=(30, 45, 25), weight=0.3)],
        },
        spread=10.0,
        head_weight=0.0,
    )
    return made.model_copy(update=update)


def picture(*parts: tuple[tuple[int, int, int], float], mode: str = "RGB") -> np.ndarray:
    """A white 64x64 input with stripes of the given colours covering the given shares of a centred square."""
    image = np.full((64, 64, 3), 255, dtype=np.uint8)
    top = 16
    for colour, share in parts:
        rows = round(32 * share)
        image[top : top + rows, 16:48] = colour
        top += rows
    return image


def test_lab_is_cielab() -> None:
    lab = to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=1.5)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=1.5)
    assert lab[2, 0] == pytest.approx(53, abs=2) and lab[2, 1] > 60 and lab[2, 2] > 50


def test_the_white_background_is_not_the_product() -> None:
    assert len(product_pixels(np.full((64, 64, 3), 250, dtype=np.uint8))) == 0
    assert swatches(np.full((64, 64, 3), 255, dtype=np.uint8)) == []
    found = swatches(picture(((31, 42, 68), 0.5), ((200, 30, 40), 0.5)))
    assert [round(s.share, 2) for s in found] == [0.5, 0.5]  # the edge next to white trims both alike
    assert {s.hex for s in found} == {"#1f2a44", "#c81e28"}
    assert len(found) <= MAX_COLOURS


def test_transparency_is_background(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((200, 30, 40, 255), (16, 16, 48, 48))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    found = swatches(decode(buffer.getvalue(), SPEC))
    assert len(found) == 1 and found[0].share == 1.0  # the transparent margin was not clustered as black


def test_names_merge_swatches_and_the_head_breaks_ties() -> None:
    pixels = picture(((31, 42, 68), 0.5), ((20, 20, 24), 0.5))  # navy and near-black: both dark
    namer = Namer(shades(), LABELS)
    named = palette(namer, pixels, np.array([0.2, 0.2, 0.2, 0.2, 0.2], dtype=np.float32))
    assert {p["name"] for p in named} == {"Navy Blue", "Black"}
    assert sum(p["share"] for p in named) == pytest.approx(1.0, abs=1e-3)
    # the head is sure it is navy: with its opinion weighed in, both dark swatches are named Navy Blue
    believing = Namer(shades(head_weight=4.0), LABELS)
    sure = np.array([0.01, 0.01, 0.96, 0.01, 0.01], dtype=np.float32)
    assert [p["name"] for p in palette(believing, pixels, sure)] == ["Navy Blue"]


def test_multi_and_names_the_head_lacks() -> None:
    namer = Namer(shades(), LABELS)
    assert "Multi" not in namer.names
    with pytest.raises(ValueError, match="Teal"):
        Namer(shades().model_copy(update={"names": {"Teal": [Shade(lab=(50, -30, -10), weight=1)]}}), LABELS)


def test_the_default_models_palette_names_the_catalogue_colour_of_real_photos() -> None:
    meta = ModelMetadata.read(DEFAULT)
    learned = Shades.read(DEFAULT)
    assert learned is not None
    head = next(h for h in meta.heads if h.name == learned.head)
    namer = Namer(learned, head.labels)
    session = ort.InferenceSession(str(DEFAULT / meta.files["int8"]), providers=["CPUExecutionProvider"])
    rows = list(csv.DictReader((CATALOGUE / "labels.csv").open(encoding="utf-8")))
    pixels = np.stack([decode((CATALOGUE / f"{r['id']}.jpg").read_bytes(), meta.preprocessing) for r in rows])
    probs = softmax(session.run([head.output], {"pixels": pixels})[0])
    hits = 0
    for row, image, p in zip(rows, pixels, probs, strict=True):
        named = palette(namer, image, p)
        assert 1 <= len(named) <= MAX_COLOURS and all(n["name"] in head.labels for n in named)
        hits += row["baseColour"] in {n["name"] for n in named}
    assert hits >= 0.75 * len(rows)

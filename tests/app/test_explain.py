"""Explanations: heat grids and PNGs from a real explainable graph, the default model on real catalogue photos."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from app.errors import NotAvailable, UnknownHead, UnknownLabel
from app.explain import Explainer, heat, heatmap_png, upsampled
from app.preprocess import decode
from app.schema import ModelMetadata
from export.explainable import make_explainable
from tests.conftest import CATALOGUE, ROOT
from tests.tiny_model import make_pooled_version, make_repository

# the default model: the highest version in the tree
DEFAULT = max((ROOT / "models" / "product-classifier").glob("[0-9]*"), key=lambda p: int(p.name))


def runner(folder: Path, precision: str = "fp32") -> tuple[Explainer, ort.InferenceSession]:
    meta = ModelMetadata.read(folder)
    session = ort.InferenceSession(str(folder / meta.files[precision]), providers=["CPUExecutionProvider"])
    return Explainer(meta), session


def test_heat_spans_zero_to_one_and_a_flat_map_is_cold() -> None:
    grid = heat(np.array([[1.0, 3.0], [-1.0, 0.0]], dtype=np.float32))
    assert grid.min() == 0.0 and grid.max() == 1.0 and grid[1, 0] == 0.0 and grid[0, 1] == 1.0
    assert not heat(np.full((4, 4), 2.5, dtype=np.float32)).any()


def test_the_png_is_the_input_with_heat_where_the_grid_is_hot() -> None:
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[0, 0] = 1.0
    values = upsampled(grid, 32, 8.0, 0.0)  # cells centred on pixels 0, 8, 16, 24
    assert values[0, 0] == 1.0 and values[4, 0] == 0.5 and values[8:, :].max() == 0.0 and values[31, 31] == 0.0
    image = np.asarray(Image.open(io.BytesIO(heatmap_png(pixels, values))))
    assert image.shape == (32, 32, 3)
    assert (image[1, 1] != 255).any()  # the hot corner is coloured
    assert (image[28, 28] == 255).all()  # a cold cell shows the photo as it is


def test_cells_are_placed_where_the_network_centres_them() -> None:
    grid = np.arange(4, dtype=np.float32).reshape(1, 4).repeat(4, axis=0)
    symmetric = upsampled(grid, 128, 32.0, 0.0)[0]
    assert symmetric[0] == 0.0 and symmetric[16] == 0.5 and symmetric[96] == 3.0 and symmetric[127] == 3.0
    shifted = upsampled(grid, 128, 32.0, 15.5)[0]  # TensorFlow's "same" padding centres cells further in
    assert shifted[15] == 0.0 and shifted[112] == 3.0 and shifted[79] == pytest.approx((79 - 15.5) / 32)


def test_explains_the_top_label_or_the_one_asked_for(tmp_path: Path) -> None:
    folder = make_explainable_folder(tmp_path)
    explainer, session = runner(folder)
    head = explainer.head(None)
    assert head.key == "article"
    pixels = np.stack(
        [decode(p.read_bytes(), explainer.metadata.preprocessing) for p in sorted(CATALOGUE.glob("*.jpg"))[:3]]
    )
    run = lambda names, batch: session.run(names, {"pixels": batch})  # noqa: E731
    top = explainer.explain(run, pixels, head, None)
    asked = explainer.explain(run, pixels, head, explainer.label_index(head, "Watches"))
    assert [e.label for e in asked] == ["Watches"] * 3
    for mine, theirs in zip(top, asked, strict=True):
        assert mine.score >= theirs.score
        answer = mine.answer()
        assert answer["head"] == "article" and len(answer["grid"]) == 32 and len(answer["grid"][0]) == 32
        assert Image.open(io.BytesIO(base64.b64decode(answer["png"]))).size == (32, 32)
    assert explainer.head("colour").name == "baseColour"


def test_unknown_heads_and_labels_and_unexplainable_models_are_refused(tmp_path: Path) -> None:
    explainer, _ = runner(make_explainable_folder(tmp_path))
    with pytest.raises(UnknownHead, match="no head 'pattern'"):
        explainer.head("pattern")
    with pytest.raises(UnknownLabel, match="no label 'Sarees'"):
        explainer.label_index(explainer.head(None), "Sarees")
    plain = Explainer(ModelMetadata.read(make_repository(tmp_path / "plain") / "tiny" / "1"))
    with pytest.raises(NotAvailable, match="vitrine export explainable"):
        plain.head(None)


def test_the_default_model_points_at_the_product_of_real_photos() -> None:
    explainer, session = runner(DEFAULT, "int8")
    spec = explainer.metadata.preprocessing
    pixels = np.stack([decode(p.read_bytes(), spec) for p in sorted(CATALOGUE.glob("*.jpg"))])
    head = explainer.head("article")
    explained = explainer.explain(lambda n, b: session.run(n, {"pixels": b}), pixels, head, None)
    on_product = 0
    for image, explanation in zip(pixels, explained, strict=True):
        grid = explanation.grid
        rows, columns = grid.shape
        row, column = np.unravel_index(int(grid.argmax()), grid.shape)
        centre = image[int((row + 0.5) * spec.size / rows), int((column + 0.5) * spec.size / columns)]
        on_product += bool((centre <= 235).any())
    assert on_product >= 0.8 * len(pixels)


def make_explainable_folder(tmp_path: Path) -> Path:
    folder = make_pooled_version(tmp_path / "tiny" / "1", members=2)
    make_explainable(folder)
    return folder

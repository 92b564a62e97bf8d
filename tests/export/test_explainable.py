"""`vitrine export explainable`: map outputs added to real ONNX graphs, exact, recorded, refused when not linear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.schema import ModelMetadata
from export.cli import main
from export.explainable import NotExplainable, explain_output, make_explainable
from tests.conftest import ROOT
from tests.tiny_model import make_pooled_version, make_repository

# the default model: the highest version in the tree
DEFAULT = max((ROOT / "models" / "product-classifier").glob("[0-9]*"), key=lambda p: int(p.name))


def _run(folder: Path, names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
    meta = ModelMetadata.read(folder)
    session = ort.InferenceSession(str(folder / meta.files["fp32"]), providers=["CPUExecutionProvider"])
    return list(session.run(names, {"pixels": pixels}))


@pytest.mark.parametrize("members", [1, 2])
def test_maps_average_to_each_heads_logits_and_are_recorded(tmp_path: Path, members: int) -> None:
    folder = make_pooled_version(tmp_path / "1", members=members)
    meta = make_explainable(folder)
    assert meta.explain is not None and ModelMetadata.read(folder).explain == meta.explain
    assert set(meta.explain.outputs) == {h.name for h in meta.heads}
    assert (meta.explain.cell_px, meta.explain.first_centre_px) == (1.0, 0.0)  # 1x1 convolutions, no stride
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    head = meta.heads[0]
    logits, maps = _run(folder, [head.output, explain_output(head.name)], pixels)
    assert maps.shape == (3, 32, 32, len(head.labels))  # 1x1 convolutions keep the input's grid
    if members == 1:
        # one member: the cells' mean is the logit less the bias (divided by the temperature), the same per image
        offset = logits - maps.mean(axis=(1, 2))
        np.testing.assert_allclose(offset, np.broadcast_to(offset[:1], offset.shape), atol=1e-4)
    assert not np.allclose(maps[0], maps[1])


def test_the_step_runs_again_without_piling_outputs_up(tmp_path: Path) -> None:
    folder = make_pooled_version(tmp_path / "1")
    make_explainable(folder)
    make_explainable(folder)
    graph = onnx.load(str(folder / "model.onnx")).graph
    outputs = [o.name for o in graph.output]
    assert len(outputs) == len(set(outputs)) == 7 + 1 + 7


def test_a_head_that_is_not_linear_over_pooled_maps_is_refused(tmp_path: Path) -> None:
    folder = make_repository(tmp_path) / "tiny" / "1"  # a linear layer over a 2x2 layout, not over pooled maps
    before = (folder / "model.onnx").read_bytes()
    with pytest.raises(NotExplainable, match="head articleType: no linear layer over globally pooled"):
        make_explainable(folder)
    assert (folder / "model.onnx").read_bytes() == before
    assert ModelMetadata.read(folder).explain is None


def test_the_cli_names_the_problem_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "1"
    folder.mkdir()
    assert main(["explainable", str(folder)]) == 2
    assert "model.json" in capsys.readouterr().err


def test_the_default_model_is_explainable_in_every_file() -> None:
    meta = ModelMetadata.read(DEFAULT)
    assert meta.explain is not None and set(meta.explain.outputs) == {h.name for h in meta.heads}
    assert (meta.explain.cell_px, meta.explain.first_centre_px) == (
        32.0,
        0.0,
    )  # efficientnet-lite at 128 px: stride 32, symmetric padding
    for name in meta.files.values():
        path = DEFAULT / name
        assert path.stat().st_size < 20_000_000
        outputs = {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}
        assert set(meta.explain.outputs.values()) <= outputs

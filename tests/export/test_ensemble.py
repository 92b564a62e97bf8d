"""Merging packaged versions into one ensemble graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from app.runtime import softmax
from app.schema import ModelMetadata
from export.ensemble import Member, check_compatible, merge, save_split
from tests.tiny_model import HEADS, build_tiny_onnx, make_repository

SIZE = 32


def _run(model: onnx.ModelProto | Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"pixels": pixels}), strict=True))


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


def test_merge_answers_the_log_of_the_members_mean_softmax(tmp_path: Path, pixels: np.ndarray) -> None:
    paths = [build_tiny_onnx(tmp_path / f"m{seed}.onnx", HEADS, SIZE, seed=seed) for seed in (1, 2, 3)]
    members = [_run(p, pixels) for p in paths]
    merged = merge([onnx.load(str(p)) for p in paths], [h.output for h in HEADS], "embedding")
    onnx.checker.check_model(merged, full_check=True)
    assert [i.name for i in merged.graph.input] == ["pixels"]
    out = _run(merged, pixels)
    assert list(out) == [*(h.output for h in HEADS), "embedding"]
    for head in HEADS:
        expected = np.mean([softmax(m[head.output]) for m in members], axis=0)
        # not any one member's answer: the members disagree on these random weights
        assert not np.allclose(softmax(members[0][head.output]), expected, atol=1e-3)
        np.testing.assert_allclose(np.exp(out[head.output]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["embedding"], members[0]["embedding"])


def test_merge_needs_one_shared_input(tmp_path: Path) -> None:
    first = onnx.load(str(build_tiny_onnx(tmp_path / "a.onnx", HEADS, SIZE)))
    second = onnx.load(str(build_tiny_onnx(tmp_path / "b.onnx", HEADS, SIZE)))
    second.graph.input[0].name = "image"
    with pytest.raises(ValueError, match="same single input"):
        merge([first, second], [h.output for h in HEADS], "embedding")


def test_members_must_share_labels_and_preprocessing(tmp_path: Path) -> None:
    make_repository(tmp_path, version=1)
    make_repository(tmp_path, version=2)
    make_repository(tmp_path, version=3, size=48)
    folders = [tmp_path / "tiny" / str(v) for v in (1, 2, 3)]
    check_compatible([Member.read(folders[0]), Member.read(folders[1])])
    with pytest.raises(ValueError, match="preprocessing"):
        check_compatible([Member.read(folders[0]), Member.read(folders[2])])
    relabelled = ModelMetadata.read(folders[1])
    relabelled.heads[3].labels = list(reversed(relabelled.heads[3].labels))
    relabelled.write(folders[1])
    with pytest.raises(ValueError, match="labels"):
        check_compatible([Member.read(folders[0]), Member.read(folders[1])])
    with pytest.raises(ValueError, match="at least two"):
        check_compatible([Member.read(folders[0])])


def test_save_split_keeps_each_members_tensors_in_its_own_file(tmp_path: Path, pixels: np.ndarray) -> None:
    paths = [build_tiny_onnx(tmp_path / f"m{seed}.onnx", HEADS, SIZE, seed=seed) for seed in (1, 2)]
    merged = merge([onnx.load(str(p)) for p in paths], [h.output for h in HEADS], "embedding")
    expected = _run(merged, pixels)
    folder = tmp_path / "out"
    folder.mkdir()
    save_split(merged, folder / "model.onnx", 2, min_bytes=16)
    data = sorted(p.name for p in folder.glob("model.onnx.*.data"))
    assert data == ["model.onnx.m0.data", "model.onnx.m1.data"]
    assert all((folder / name).stat().st_mode & 0o044 == 0o044 for name in data)  # readable by the service user
    graph_only = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    weights = [t for t in graph_only.graph.initializer if "/w_" in t.name]
    assert len(weights) == 2 * len(HEADS) and all(t.data_location == TensorProto.EXTERNAL for t in weights)
    out = _run(folder / "model.onnx", pixels)
    for name, value in expected.items():
        np.testing.assert_array_equal(out[name], value)

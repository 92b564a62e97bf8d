"""Tests for export/memory.py: the vote's arithmetic, how it is fitted, and that it survives ONNX, INT8 and FP16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.calibration import apply_temperatures
from export.config import MemoryConfig
from export.convert import check_parity, export_onnx, onnx_outputs
from export.data import IGNORE, Catalogue
from export.memory import NeighbourMemory, fit_memory, gain_p_value
from export.quantize import after_features, convert_fp16, quantize_int8
from export.train import predict
from tests.export.test_convert import HEAD_SIZES, SIZE, catalogue_pixels, metadata, tiny_classifier


def identity_memory(vectors: list[list[float]], labels: list[int], classes: int, **kwargs: object) -> NeighbourMemory:
    """A memory over the given unit vectors (no projection) with one head, `articleType`."""
    stored = np.array(vectors, dtype=np.float64)
    dims = stored.shape[1]
    return NeighbourMemory(
        np.zeros(dims),
        np.eye(dims),
        stored,
        {"articleType": np.array(labels)},
        {"articleType": classes},
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_nearest_photo_votes_for_its_label() -> None:
    memory = identity_memory([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [2, 0, 1], 3, k=1, temperature=0.05)
    weights, index = memory.neighbours(torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 0.9]]))
    assert index[:, 0].tolist() == [1, 2]
    votes = memory.votes("articleType", weights, index)
    assert torch.equal(votes, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def test_closer_photos_weigh_more_and_unlabelled_ones_do_not_vote() -> None:
    vectors = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]
    memory = identity_memory(vectors, [0, 1, IGNORE], 2, k=3, temperature=0.1)
    weights, index = memory.neighbours(torch.tensor([[1.0, 0.0]]))
    votes = memory.votes("articleType", weights, index)[0]
    # similarities 1.0 and 0.8 (the unlabelled photo's 0.0 is dropped): weights 1 and exp(-2), up to the
    # int8 storage of the vectors (0.8 is stored as 102/127)
    expected = torch.tensor([1.0, float(np.exp(-2.0))])
    assert torch.allclose(votes, expected / expected.sum(), atol=5e-3)

    alone = identity_memory([[1, 0]], [IGNORE], 2, k=1, temperature=0.1)
    weights, index = alone.neighbours(torch.tensor([[1.0, 0.0]]))
    assert alone.votes("articleType", weights, index).sum() == 0


def test_blended_heads_answer_a_distribution_and_the_others_pass_through() -> None:
    memory = identity_memory([[1, 0], [0, 1]], [1, 0], 2, k=1, temperature=0.05, blend={"articleType": 0.25})
    logits = {"articleType": torch.tensor([[2.0, 0.0]]), "baseColour": torch.tensor([[0.5, 0.1, 0.3]])}
    out = memory(logits, torch.tensor([[1.0, 0.0]]))
    expected = 0.75 * torch.softmax(logits["articleType"], dim=1) + 0.25 * torch.tensor([[0.0, 1.0]])
    assert torch.allclose(out["articleType"].exp(), expected, atol=1e-6)
    assert out["baseColour"] is logits["baseColour"]
    assert memory.k == 1 and identity_memory([[1, 0]], [0], 2, k=20, temperature=0.1).k == 1


def test_a_gain_counts_only_if_the_vote_fixes_clearly_more_than_it_breaks() -> None:
    without = np.array([False] * 30 + [True] * 70)
    clear = without.copy()
    clear[:12] = True  # 12 fixed, none broken
    assert gain_p_value(clear, without) < 0.001
    even = clear.copy()
    even[30:40] = False  # 12 fixed, 10 broken
    assert gain_p_value(even, without) > 0.3
    assert gain_p_value(without, without) == 1.0


def catalogue(pixels: np.ndarray, labels: dict[str, np.ndarray]) -> Catalogue:
    return Catalogue(
        ids=[str(i) for i in range(len(pixels))],
        pixels=pixels,
        labels=labels,
        classes={head: [f"{head}-{c}" for c in range(n)] for head, n in HEAD_SIZES.items()},
    )


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return catalogue_pixels(SIZE)


def test_fit_keeps_a_vote_only_where_it_helps_on_validation(pixels: np.ndarray) -> None:
    model = tiny_classifier(pixels)
    rng = np.random.default_rng(0)
    labels = {head: rng.integers(0, n, len(pixels)) for head, n in HEAD_SIZES.items()}
    train = catalogue(pixels, labels)
    # Validation photos are training photos again: their single nearest neighbour is themselves, with
    # their label for articleType; baseColour's validation labels are shifted, so the vote can only hurt.
    val_labels = {
        "articleType": labels["articleType"],
        "baseColour": (labels["baseColour"] + 1) % HEAD_SIZES["baseColour"],
    }
    val = catalogue(pixels, val_labels)
    memory = fit_memory(model, train, val, MemoryConfig(neighbours=1, dimensions=8))
    assert memory.blend["articleType"] > 0 and memory.blend["baseColour"] == 0
    model.memory = memory
    probs = predict(model, val.pixels)
    assert (probs["articleType"].argmax(axis=1) == val_labels["articleType"]).all()
    assert np.allclose(probs["articleType"].sum(axis=1), 1.0, atol=1e-5)


def test_answers_rescaled_by_temperatures_are_the_networks_and_fit_the_same_vote(pixels: np.ndarray) -> None:
    # Packaging predicts validation once: the vote is fitted on those answers rescaled by the temperatures.
    model = tiny_classifier(pixels)
    rng = np.random.default_rng(0)
    labels = {head: rng.integers(0, n, len(pixels)) for head, n in HEAD_SIZES.items()}
    train = catalogue(pixels, labels)
    before = predict(model, pixels)
    temperatures = {"articleType": 1.7, "baseColour": 0.6}
    model.set_temperatures(temperatures)
    rescaled = apply_temperatures(before, temperatures)
    after = predict(model, pixels)
    assert rescaled["embedding"] is before["embedding"]
    for name, answer in after.items():
        assert rescaled[name].dtype == answer.dtype and np.allclose(rescaled[name], answer, atol=1e-5), name
    config = MemoryConfig(neighbours=1, dimensions=8)
    fitted = fit_memory(model, train, train, config, rescaled)
    assert fitted.blend == fit_memory(model, train, train, config).blend and fitted.blend["articleType"] > 0


def test_the_vote_exports_with_parity_and_survives_int8_and_fp16(pixels: np.ndarray, tmp_path: Path) -> None:
    model = tiny_classifier(pixels)
    rng = np.random.default_rng(1)
    labels = {head: rng.integers(0, n, len(pixels)) for head, n in HEAD_SIZES.items()}
    train = catalogue(pixels, labels)
    memory = fit_memory(model, train, train, MemoryConfig(neighbours=3, dimensions=8))
    memory.blend = {"articleType": 0.5, "baseColour": 0.3}  # whatever the fit chose: exercise both heads
    model.memory = memory
    meta = metadata()
    fp32 = export_onnx(model, meta, tmp_path / "model.onnx")
    parity = check_parity(model, fp32, pixels, [h.name for h in meta.heads])
    assert all(agreement == 1.0 for agreement in parity.top1_agreement.values())
    ops = {n.op_type for n in onnx.load(str(fp32)).graph.node}
    assert "Gather" in ops and "GatherND" not in ops  # GatherND stayed on the CPU under onnxruntime's CUDA provider

    reference = onnx_outputs(fp32, pixels)
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", pixels)
    quantized = onnx.load(str(int8))
    vote = set(after_features(quantized))
    assert any(n.op_type == "TopK" for n in quantized.graph.node if n.name in vote)
    assert not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node if n.name in vote)
    fp16 = convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    for path in (int8, fp16):
        outputs = onnx_outputs(path, pixels)
        for head in meta.heads:
            assert np.allclose(np.exp(outputs[head.output]).sum(axis=1), 1.0, atol=1e-2), (path.name, head.name)
            same = outputs[head.output].argmax(axis=1) == reference[head.output].argmax(axis=1)
            assert same.mean() >= 0.8, (path.name, head.name, same.mean())

"""Tests for export/convert.py: ONNX export of any CNN backbone, parity with PyTorch, metadata round trip."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from app.preprocess import decode
from app.schema import ONNX_METADATA_KEY, Head, ModelMetadata, Preprocessing
from export.convert import (
    ParityError,
    check_parity,
    cpu_session,
    export_onnx,
    onnx_outputs,
    read_onnx_metadata,
)
from export.network import MultiHeadClassifier, build_efficientnet_classifier

SIZE = 32
FEATURES = 16
HEAD_SIZES = {"articleType": 5, "baseColour": 4}
CATALOGUE = Path(__file__).resolve().parents[1] / "data" / "catalogue"


class TinyResNet(nn.Module):
    """Two conv blocks with a residual connection and global average pooling: NCHW float to (N, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, FEATURES, 3, 2, 1, bias=False), nn.BatchNorm2d(FEATURES), nn.ReLU())
        self.conv1 = nn.Conv2d(FEATURES, FEATURES, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(FEATURES)
        self.conv2 = nn.Conv2d(FEATURES, FEATURES, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + y).mean(dim=(2, 3))


def tiny_classifier(pixels: np.ndarray) -> MultiHeadClassifier:
    """A seeded tiny classifier whose batch-norm statistics come from real images (so folding them matters)."""
    torch.manual_seed(0)
    model = MultiHeadClassifier(TinyResNet(), FEATURES, HEAD_SIZES)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(pixels))
    return model.eval()


def metadata(size: int = SIZE) -> ModelMetadata:
    """Metadata matching `HEAD_SIZES`, with output names that differ from the head names."""
    return ModelMetadata(
        name="tiny",
        version=3,
        architecture="tiny-resnet",
        preprocessing=Preprocessing(size=size),
        heads=[
            Head(
                name="articleType",
                output="articleType_logits",
                key="type",
                role="category",
                level="article",
                labels=["Tshirts", "Shirts", "Watches", "Casual Shoes", "Handbags"],
            ),
            Head(
                name="baseColour",
                output="baseColour_logits",
                key="colour",
                role="attribute",
                labels=["White", "Black", "Blue", "Red"],
            ),
        ],
        files={"fp32": "model.onnx"},
    )


def linear_head(model: MultiHeadClassifier, name: str) -> nn.Linear:
    """The named head's linear layer."""
    head = model.heads[name]
    assert isinstance(head, nn.Linear)
    return head


def catalogue_pixels(size: int) -> np.ndarray:
    """Real catalogue JPEGs through the service's own preprocessing."""
    spec = Preprocessing(size=size)
    return np.stack([decode(path.read_bytes(), spec) for path in sorted(CATALOGUE.glob("*.jpg"))])


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return catalogue_pixels(SIZE)


@pytest.fixture(scope="module")
def model(pixels: np.ndarray) -> MultiHeadClassifier:
    return tiny_classifier(pixels)


@pytest.fixture(scope="module")
def exported(model: MultiHeadClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model.train()  # export must switch to eval itself (dropout off, running batch-norm statistics)
    path = export_onnx(model, metadata(), tmp_path_factory.mktemp("fp32") / "model.onnx")
    assert model.training, "export should restore the caller's mode"
    model.eval()
    return path


def test_export_is_one_checker_clean_file_with_named_outputs(exported: Path) -> None:
    onnx.checker.check_model(str(exported), full_check=True)
    assert [p.name for p in exported.parent.iterdir()] == ["model.onnx"]  # no external data files
    graph = onnx.load(str(exported)).graph
    (pixels_input,) = graph.input
    assert pixels_input.name == "pixels"
    assert pixels_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]
    assert [o.name for o in graph.output] == ["articleType_logits", "baseColour_logits", "embedding"]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in graph.output)


def test_exported_model_runs_at_batch_1_and_5(exported: Path, pixels: np.ndarray) -> None:
    session = cpu_session(exported, threads=1)
    five = session.run(None, {"pixels": pixels[:5]})
    one = session.run(None, {"pixels": pixels[2:3]})
    assert [o.shape for o in five] == [(5, 5), (5, 4), (5, FEATURES)]
    assert [o.shape for o in one] == [(1, 5), (1, 4), (1, FEATURES)]
    for batched, single in zip(five, one, strict=True):
        np.testing.assert_allclose(batched[2:3], single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(five[2], axis=1), 1.0, atol=1e-5)


def test_onnx_outputs_batches_and_names(exported: Path, pixels: np.ndarray) -> None:
    whole = onnx_outputs(exported, pixels, threads=1)
    chunked = onnx_outputs(exported, pixels, batch_size=7, threads=1)
    assert list(whole) == ["articleType_logits", "baseColour_logits", "embedding"]
    for name, value in whole.items():
        assert value.shape[0] == len(pixels)
        np.testing.assert_allclose(chunked[name], value, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        onnx_outputs(exported, pixels.astype(np.float32), threads=1)


def test_parity_passes_with_a_sane_report(model: MultiHeadClassifier, exported: Path, pixels: np.ndarray) -> None:
    report = check_parity(model, exported, pixels, model.head_names)
    assert report.images == len(pixels)
    assert 0.0 <= report.max_abs_logit_diff <= 1e-3
    assert report.top1_agreement == {"articleType": 1.0, "baseColour": 1.0}
    # The images must actually exercise the heads, or agreement would be trivially 1.
    logits = onnx_outputs(exported, pixels, threads=1)["articleType_logits"]
    assert len(np.unique(logits.argmax(axis=1))) > 1


def test_perturbed_model_fails_parity(model: MultiHeadClassifier, exported: Path, pixels: np.ndarray) -> None:
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        linear_head(shifted, "baseColour").bias[0] += 0.01
    with pytest.raises(ParityError, match="baseColour"):
        check_parity(shifted, exported, pixels, shifted.head_names)

    # A large shift flips predictions: the agreement check fails even with a loose logit tolerance.
    flipped = copy.deepcopy(model)
    with torch.no_grad():
        linear_head(flipped, "articleType").bias[0] += 100.0
    with pytest.raises(ParityError, match="articleType: top-1 agreement"):
        check_parity(flipped, exported, pixels, flipped.head_names, max_abs_diff=1e3)


def test_metadata_round_trip(exported: Path) -> None:
    assert read_onnx_metadata(exported) == metadata()
    proto = onnx.load(str(exported))
    assert proto.producer_name == "vitrine-export"
    assert proto.producer_version


def test_missing_metadata_is_reported(exported: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(exported))
    kept = [p for p in proto.metadata_props if p.key != ONNX_METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match=ONNX_METADATA_KEY):
        read_onnx_metadata(bare)


def test_export_rejects_metadata_that_does_not_match_the_heads(model: MultiHeadClassifier, tmp_path: Path) -> None:
    meta = metadata()
    meta.heads = list(reversed(meta.heads))
    with pytest.raises(ValueError, match="do not match"):
        export_onnx(model, meta, tmp_path / "model.onnx")


@pytest.mark.slow
def test_pretrained_efficientnet_lite0_exports_with_parity(tmp_path: Path) -> None:
    size = 64
    pixels = catalogue_pixels(size)[:16]
    model = build_efficientnet_classifier(HEAD_SIZES, pretrained=True).eval()
    path = export_onnx(model, metadata(size), tmp_path / "model.onnx")
    report = check_parity(model, path, pixels, model.head_names)
    assert report.images == 16
    assert report.max_abs_logit_diff < 1e-3
    assert set(report.top1_agreement) == set(HEAD_SIZES)

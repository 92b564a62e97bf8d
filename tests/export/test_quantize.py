"""Tests for export/quantize.py: static INT8 (QDQ) and FP16 variants of an exported model, CPU throughput."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from app.preprocess import decode
from app.schema import Head, ModelMetadata, Preprocessing
from export.cli import run_quantize
from export.config import ExportConfig, HeadSpec
from export.convert import cpu_session, export_onnx, onnx_outputs, read_onnx_metadata
from export.data import IGNORE, Catalogue
from export.network import MultiHeadClassifier
from export.pipeline import Int8LossError, Splits
from export.quantize import after_features, benchmark_cpu, compact_constants, convert_fp16, quantize_int8
from export.steps import int8_drops

SIZE = 32
FEATURES = 32
HEAD_SIZES = {"articleType": 5, "baseColour": 4}
CATALOGUE = Path(__file__).resolve().parents[1] / "data" / "catalogue"
OUTPUTS = ["articleType", "baseColour", "embedding"]


class TinyVGG(nn.Module):
    """Three conv-BN-ReLU blocks (two pooled) and global average pooling: NCHW float to (N, 32)."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.layers = nn.Sequential(
            *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, FEATURES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps: torch.Tensor = self.layers(x)
        return maps.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    spec = Preprocessing(size=SIZE)
    return np.stack([decode(path.read_bytes(), spec) for path in sorted(CATALOGUE.glob("*.jpg"))])


@pytest.fixture(scope="module")
def meta() -> ModelMetadata:
    return ModelMetadata(
        name="tiny",
        version=1,
        architecture="tiny-vgg",
        preprocessing=Preprocessing(size=SIZE),
        heads=[
            Head(
                name="articleType",
                output="articleType",
                key="type",
                role="category",
                level="article",
                labels=["a", "b", "c", "d", "e"],
            ),
            Head(name="baseColour", output="baseColour", key="colour", role="attribute", labels=["w", "x", "y", "z"]),
        ],
    )


@pytest.fixture(scope="module")
def fp32(pixels: np.ndarray, meta: ModelMetadata, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = MultiHeadClassifier(TinyVGG(), FEATURES, HEAD_SIZES)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():  # batch-norm statistics from real images, as after training
        model.train()(torch.from_numpy(pixels))
        model.eval()
        # Standardise each head's logits over the images so that predictions vary from image to image
        # (random heads on positive pooled features pick one class for every image: agreement would be trivial).
        features: torch.Tensor = model.backbone(model.normalise(torch.from_numpy(pixels)))
        for head in model.heads.values():
            assert isinstance(head, nn.Linear)
            logits = features @ head.weight.T
            head.weight /= logits.std(dim=0, keepdim=True).T
            head.bias.copy_(-(features @ head.weight.T).mean(dim=0))
    return export_onnx(model.eval(), meta, tmp_path_factory.mktemp("fp32") / "model.onnx")


@pytest.fixture(scope="module")
def reference(fp32: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    return onnx_outputs(fp32, pixels, threads=1)


@pytest.fixture(scope="module")
def int8(fp32: Path, pixels: np.ndarray) -> Path:
    # The tiny net has three convolutions: quantise them all (the default keeps the stem block in float).
    return quantize_int8(fp32, fp32.parent / "model.int8.onnx", pixels[:32], float_first_convs=0, float_last_convs=0)


@pytest.fixture(scope="module")
def fp16(fp32: Path) -> Path:
    return convert_fp16(fp32, fp32.parent / "model.fp16.onnx")


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def test_int8_has_per_channel_qdq_and_keeps_io_types(int8: Path) -> None:
    onnx.checker.check_model(str(int8))
    graph = onnx.load(str(int8)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    int8_weights = [w for w in weights.values() if w.dtype == np.int8 and w.ndim == 4]
    assert len(int8_weights) == 3  # every convolution's weights are stored as int8
    # Per-channel: the convolution weights' dequantisation scales are vectors, one per output channel.
    weight_scales = [
        weights[node.input[1]]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and weights.get(node.input[0], np.empty(0)).ndim == 4
    ]
    assert weight_scales and all(scale.ndim == 1 and scale.size > 1 for scale in weight_scales)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in graph.output] == OUTPUTS
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in graph.output)


def test_int8_agrees_with_fp32(int8: Path, pixels: np.ndarray, reference: dict[str, np.ndarray]) -> None:
    produced = onnx_outputs(int8, pixels, threads=1)
    assert all(len(np.unique(reference[head].argmax(axis=1))) == n for head, n in HEAD_SIZES.items())
    assert all(v.dtype == np.float32 for v in produced.values())
    for head in HEAD_SIZES:
        # Measured 0.94-0.96 on these 48 images; a broken quantisation lands near chance (0.2-0.25).
        assert agreement(produced[head], reference[head]) >= 0.85, head
        error = np.abs(produced[head] - reference[head]).max() / np.abs(reference[head]).max()
        assert error < 0.1, head
    cosine = np.sum(produced["embedding"] * reference["embedding"], axis=1)
    assert cosine.min() > 0.98
    assert not np.allclose(produced["articleType"], reference["articleType"], atol=1e-6)  # really quantised


def test_int8_and_fp16_keep_metadata(fp32: Path, int8: Path, fp16: Path, meta: ModelMetadata) -> None:
    assert read_onnx_metadata(int8) == meta
    assert read_onnx_metadata(fp16) == meta
    assert read_onnx_metadata(fp32) == meta


def test_int8_rejects_float_calibration_pixels(fp32: Path, pixels: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        quantize_int8(fp32, tmp_path / "q.onnx", pixels.astype(np.float32))


def test_fp16_runs_on_cpu_close_to_fp32(fp16: Path, pixels: np.ndarray, reference: dict[str, np.ndarray]) -> None:
    onnx.checker.check_model(str(fp16))
    graph = onnx.load(str(fp16)).graph
    float_types = {i.data_type for i in graph.initializer} & {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer if i.name in conv_weights)
    assert onnx.TensorProto.FLOAT16 in float_types
    session = cpu_session(fp16, threads=1)
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert [o.type for o in session.get_outputs()] == ["tensor(float)"] * 3
    produced = onnx_outputs(fp16, pixels, threads=1)
    for name in OUTPUTS:
        assert produced[name].dtype == np.float32
        scale = float(np.abs(reference[name]).max())
        np.testing.assert_allclose(produced[name], reference[name], atol=1e-2 * scale, err_msg=name)
    for head in HEAD_SIZES:
        assert agreement(produced[head], reference[head]) >= 0.95, head


def test_benchmark_cpu_reports_images_per_second(int8: Path, pixels: np.ndarray) -> None:
    rate = benchmark_cpu(int8, pixels[:3], batch_size=8, threads=1, seconds=0.2)
    assert math.isfinite(rate) and rate > 0


def test_default_keeps_the_stem_block_last_conv_and_heads_in_float(
    fp32: Path, pixels: np.ndarray, tmp_path: Path
) -> None:
    quantized = onnx.load(
        str(quantize_int8(fp32, tmp_path / "q.onnx", pixels[:16], float_first_convs=1, float_last_convs=1))
    )
    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    produced_by_dq = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_weights = [c.name for c in convs if c.input[1] in produced_by_dq]
    assert len(convs) == 3 and quantized_weights == [convs[1].name]


def test_everything_after_the_pooled_features_stays_float(fp32: Path, int8: Path) -> None:
    source = onnx.load(str(fp32))
    downstream = set(after_features(source))
    heads = {n.name for n in source.graph.node if n.op_type == "Gemm"}
    assert len(heads) == 2 and heads < downstream
    assert not any(n.op_type == "Conv" for n in source.graph.node if n.name in downstream)
    quantized = onnx.load(str(int8))
    kept = set(after_features(quantized))
    assert kept and not any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in quantized.graph.node if n.name in kept
    )


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_compact_constants_is_lossless_and_leaves_other_floats_alone() -> None:
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.001, 0.1, 16).astype(np.float32)
    levels = rng.integers(-127, 128, (16, 500)).astype(np.float32)
    levels[:, 0] = 127  # each row reaches the full range, as the memory's per-dimension scale makes it
    folded = (levels * scale[:, None]).astype(np.float32)
    x = rng.normal(size=(3, 16)).astype(np.float32)

    model = _matmul_model(folded)
    before = _run_float(model, x)
    assert compact_constants(model, min_elements=1000) == ["w"]
    onnx.checker.check_model(model)
    stored = {t.name: t for t in model.graph.initializer}
    assert stored["w/int8"].data_type == TensorProto.INT8 and "w" not in stored
    np.testing.assert_array_equal(_run_float(model, x), before)
    assert len(model.SerializeToString()) < folded.nbytes / 3

    plain = _matmul_model(rng.normal(size=(16, 500)).astype(np.float32))
    assert compact_constants(plain, min_elements=1000) == []
    small = _matmul_model(folded[:, :10])
    assert compact_constants(small, min_elements=1000) == []


def _run_float(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"x": x})[0]
    return result


def test_int8_check_skips_a_head_without_test_metrics(caplog: pytest.LogCaptureFixture) -> None:
    # A head with no labelled test image has no metrics (summarise skips it): packaging must not fail on it.
    metrics = {"fp32": {"articleType.top1": 0.8}, "int8": {"articleType.top1": 0.79}}
    with caplog.at_level("WARNING", logger="export.steps"):
        drops = int8_drops(metrics, ["articleType", "usage"], 0.05)
    assert drops == pytest.approx({"articleType": 0.01})
    assert "usage" in caplog.text
    with pytest.raises(Int8LossError, match="on articleType"):
        int8_drops(metrics, ["articleType", "usage"], 0.001)
    assert int8_drops({"fp32": {}, "int8": {}}, ["usage"], 0.0) == {}


def test_quantize_table_leaves_out_a_head_without_test_labels(
    fp32: Path, meta: ModelMetadata, pixels: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = {h.name: h.labels for h in meta.heads}
    rng = np.random.default_rng(0)
    labels = {"articleType": rng.integers(0, 5, len(pixels)), "baseColour": np.full(len(pixels), IGNORE)}
    data = Catalogue(ids=[str(i) for i in range(len(pixels))], pixels=pixels, labels=labels, classes=classes)
    config = ExportConfig(heads=[HeadSpec(column=h.name, key=h.key) for h in meta.heads], calibration_images=8)
    config.max_int8_top1_drop = 1.0
    args = argparse.Namespace(
        model=fp32, dir=tmp_path, calibration="minmax", float_first_convs=0, float_last_convs=0, bench_seconds=0.05
    )
    run_quantize(Splits(data, data, data), config, args, tmp_path, (fp32, meta))
    rows = capsys.readouterr().out.splitlines()
    assert [row.split(" | ")[0] for row in rows[2:-1]] == ["| articleType"]

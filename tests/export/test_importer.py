"""`vitrine export import`: foreign ONNX classifiers packaged, checked by parity and served like the default."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from app.main import create_app
from app.preprocess import decode
from app.repository import resolve
from app.schema import ModelMetadata
from app.settings import Settings
from export.adapter import HeadSpec, ImportProblem
from export.cli import main
from export.importer import import_model
from tests.conftest import CATALOGUE

LABELS = ["red", "green", "blue", "grey"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def nchw_softmax_model(path: Path, *, size: int = 16, batch: int | str = "N", bake_batch: bool = False) -> Path:
    """A PyTorch-style classifier: NCHW float ImageNet-normalised in, channel means, a linear layer, Softmax."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    shape = [1, 3] if bake_batch else [-1, 3]  # a batch of 1 baked in, as some exporters leave it
    inits = [
        numpy_helper.from_array(np.array(shape, np.int64), "shape"),
        numpy_helper.from_array(rng.normal(0, 2, (3, len(LABELS))).astype(np.float32), "weight"),
    ]
    graph = helper.make_graph(
        nodes,
        "nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, len(LABELS)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def labels_file(folder: Path, labels: list[str] = LABELS) -> Path:
    path = folder / "labels.txt"
    path.write_text("\n".join(labels) + "\n")
    return path


def photo() -> bytes:
    return sorted(CATALOGUE.glob("*.jpg"))[0].read_bytes()


def test_imports_an_nchw_imagenet_softmax_model_and_the_service_reproduces_it(tmp_path: Path) -> None:
    source = nchw_softmax_model(tmp_path / "colours.onnx")
    folder, meta = import_model(
        source,
        [HeadSpec("probs", "article", LABELS)],
        "imagenet",
        repository=tmp_path / "models",
        name="colours",
    )
    assert folder == tmp_path / "models" / "colours" / "1"
    assert ModelMetadata.read(folder) == meta
    assert meta.imported is not None
    assert (meta.imported.layout, meta.imported.dtype, meta.imported.channels) == ("NCHW", "float32", "RGB")
    assert meta.imported.scores == "probabilities"
    assert meta.imported.parity["max_abs_probability_diff"] <= 1e-4
    assert meta.heads[0].level == "article" and meta.heads[0].labels == LABELS
    # The original, fed by this test's own arithmetic, against the service answering over HTTP.
    pixels = decode(photo(), meta.preprocessing)
    x = ((pixels.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]
    want = ort.InferenceSession(str(source)).run(["probs"], {"input": x})[0][0]
    settings = Settings(model_repository=tmp_path / "models", model_name="colours", providers="cpu", intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/classify", files={"images": ("a.jpg", photo(), "image/jpeg")}).json()
    scores = {entry["label"]: entry["score"] for entry in answer["results"][0]["top_k"]}
    assert scores == pytest.approx({label: float(p) for label, p in zip(LABELS, want, strict=True)}, abs=1e-5)


def test_imports_a_pytorch_export_with_logits(tmp_path: Path) -> None:
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    source = tmp_path / "torch.onnx"
    torch.onnx.export(
        network,
        (torch.zeros(2, 3, 24, 24),),
        str(source),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        dynamo=True,
    )
    _, meta = import_model(
        source,
        [HeadSpec("logits", "colour", ["a", "b", "c"])],
        "symmetric",
        repository=tmp_path / "models",
        name="torchy",
    )
    assert meta.imported is not None and meta.imported.scores == "logits"
    assert meta.heads[0].role == "attribute"
    runtime_input = resolve(tmp_path / "models", "torchy").metadata.preprocessing
    assert runtime_input.size == 24


def test_bgr_and_uint8_inputs_see_the_channels_they_expect(tmp_path: Path) -> None:
    # Each output is the mean of one of the graph's channels, in the order the graph takes them (B, G, R).
    nodes = [
        helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["out"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")]
    graph = helper.make_graph(
        nodes,
        "bgr",
        [helper.make_tensor_value_info("img", TensorProto.UINT8, ["N", 16, 16, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "bgr.onnx")
    _, meta = import_model(
        tmp_path / "bgr.onnx",
        [HeadSpec("out", "article", ["blue", "green", "red"])],
        "raw,bgr",
        repository=tmp_path / "models",
        name="bgr",
        scores="logits",
    )
    assert meta.imported is not None and meta.imported.dtype == "uint8" and meta.imported.channels == "BGR"
    red = io.BytesIO()
    Image.new("RGB", (16, 16), (250, 0, 0)).save(red, format="PNG")
    settings = Settings(model_repository=tmp_path / "models", model_name="bgr", providers="cpu", intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/classify", files={"images": ("r.png", red.getvalue(), "image/png")}).json()
    # Fed as RGB, red would land on the graph's first channel, which it reads as blue.
    assert answer["results"][0]["category"]["label"] == "red"


def test_labels_that_do_not_match_the_output_are_refused(tmp_path: Path) -> None:
    source = nchw_softmax_model(tmp_path / "m.onnx")
    with pytest.raises(ImportProblem, match="4 classes"):
        import_model(source, [HeadSpec("probs", "article", ["a", "b", "c"])], "unit", repository=tmp_path, name="m")
    assert not (tmp_path / "m" / "1").exists()  # nothing half-written is left to serve


def test_a_batch_of_one_baked_into_the_graph_is_refused_with_the_fix(tmp_path: Path) -> None:
    source = nchw_softmax_model(tmp_path / "m.onnx", batch=1, bake_batch=True)
    with pytest.raises(ImportProblem, match="dynamic batch axis"):
        import_model(source, [HeadSpec("probs", "article", LABELS)], "unit", repository=tmp_path, name="m")


def test_the_normalisation_must_be_said(tmp_path: Path) -> None:
    source = nchw_softmax_model(tmp_path / "m.onnx")
    with pytest.raises(ImportProblem, match="unit for Keras"):
        import_model(source, [HeadSpec("probs", "article", LABELS)], "NCHW", repository=tmp_path, name="m")
    with pytest.raises(ImportProblem, match="unknown token"):
        import_model(source, [HeadSpec("probs", "article", LABELS)], "unit,sepia", repository=tmp_path, name="m")


def test_cli_packages_into_the_repository_and_explains_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = nchw_softmax_model(tmp_path / "colours.onnx")
    labels = labels_file(tmp_path)
    repo = tmp_path / "models"
    args = ["import", str(source), "--labels", str(labels), "--input", "imagenet", "--repository", str(repo)]
    assert main(args) == 0
    assert main(args) == 0  # the next free version
    assert [p.name for p in sorted((repo / "colours").iterdir())] == ["1", "2"]
    assert main([*args, "--version", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (
        main(["import", str(source), "--labels", f"nope={labels}", "--input", "unit", "--repository", str(repo)]) == 2
    )
    assert "no output 'nope'" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.onnx"), "--labels", str(labels), "--input", "unit"]) == 2
    assert "no such file" in capsys.readouterr().err

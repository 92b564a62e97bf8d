"""onnxruntime session: provider read-back, signature checks, softmax outputs, warm-up."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from app.core import Core
from app.errors import ModelLoadError
from app.metrics import Metrics
from app.repository import resolve
from app.runtime import Runtime, choose_precision, cuda_available, softmax
from app.schema import ModelMetadata
from app.settings import Settings
from tests.tiny_model import HEADS, make_repository


def load(repo: Path, **kwargs: object) -> Runtime:
    options = {"precision": "auto", "providers": "cpu", "intra_op_threads": 1, **kwargs}
    return Runtime(resolve(repo, "tiny"), **options)  # type: ignore[arg-type]


def test_runs_and_reports_the_cpu_provider(tiny_repo: Path) -> None:
    runtime = load(tiny_repo)
    assert runtime.provider == "cpu" and runtime.precision == "fp32"
    out = runtime.run(np.full((3, 32, 32, 3), 200, dtype=np.uint8))
    for head in HEADS:
        probs = out[head.output]
        assert probs.shape == (3, len(head.labels))
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert out["embedding"].shape == (3, 12)


def test_warm_up_covers_the_batch_shapes(tiny_repo: Path) -> None:
    assert load(tiny_repo).warm_up(16) == [1, 16]


def test_labels_that_do_not_match_the_outputs_are_refused(tiny_repo: Path) -> None:
    folder = tiny_repo / "tiny" / "1"
    meta = ModelMetadata.read(folder)
    meta.heads[0].labels.append("Extra")
    meta.write(folder)
    with pytest.raises(ModelLoadError, match="classes"):
        load(tiny_repo)


def test_labels_that_do_not_match_outputs_of_undeclared_width_are_refused(tiny_repo: Path) -> None:
    """A graph whose output shape is computed at run time declares no width: one image is run to check it."""
    folder = tiny_repo / "tiny" / "1"
    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        if list(node.output) == ["articleType"]:
            node.output[0] = "article_raw"
    model.graph.node.extend(
        [
            helper.make_node("Shape", ["article_raw"], ["article_shape"]),
            helper.make_node("Reshape", ["article_raw", "article_shape"], ["articleType"]),
        ]
    )
    (declared,) = [o for o in model.graph.output if o.name == "articleType"]
    declared.type.tensor_type.ClearField("shape")
    onnx.save(model, str(folder / "model.onnx"))
    assert load(tiny_repo).run(np.full((2, 32, 32, 3), 9, dtype=np.uint8))["articleType"].shape == (2, 5)
    meta = ModelMetadata.read(folder)
    meta.heads[0].labels = meta.heads[0].labels[:3]
    meta.write(folder)
    with pytest.raises(ModelLoadError, match="metadata lists 3 classes"):
        load(tiny_repo)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider")
def test_a_cuda_build_without_a_usable_gpu_serves_the_cpu_file(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu on a host without a GPU falls back to the CPU: `auto` then takes the file the CPU
    would take (INT8), also for a model without an FP16 file."""
    folder = tiny_repo / "tiny" / "1"
    shutil.copy(folder / "model.onnx", folder / "model.int8.onnx")
    meta = ModelMetadata.read(folder)
    meta.files = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    meta.write(folder)
    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    monkeypatch.setattr(ort, "preload_dlls", lambda *args, **kwargs: None, raising=False)
    runtime = load(tiny_repo, providers="auto")
    assert (runtime.provider, runtime.precision, runtime.path.name) == ("cpu", "int8", "model.int8.onnx")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider")
def test_a_cuda_build_without_a_usable_gpu_serves_in_the_cpu_layout(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback serves like a CPU build: one-thread model workers that decode their own batches, not the
    GPU's one two-thread session fed by decode threads."""
    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    monkeypatch.setattr(ort, "preload_dlls", lambda *args, **kwargs: None, raising=False)
    settings = tiny_settings.model_copy(update={"providers": "auto", "intra_op_threads": 2, "max_batch_size": None})
    core = Core(settings, Metrics())
    assert core.runtime.provider == "cpu"
    assert core.layout == settings.layout(cuda=False) != settings.layout(cuda=True)
    assert core.layout.decode_on_model_threads and core.layout.model_workers == 2
    assert core.runtime.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
def test_non_finite_outputs_fail_the_run_instead_of_answering_nan_scores(tiny_repo: Path) -> None:
    """FP16 overflow on a GPU gives inf logits; softmax then gives NaN, which JSON would carry as null."""
    runtime = load(tiny_repo)
    real = runtime.session

    class Overflowing:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            outputs: list[np.ndarray] = real.run(names, feeds)
            outputs[0] = outputs[0].copy()
            outputs[0][0, 0] = np.inf
            return outputs

    runtime.session = Overflowing()
    with pytest.raises(RuntimeError, match="not finite"):
        runtime.run(np.full((2, 32, 32, 3), 9, dtype=np.uint8))


def test_wrong_input_size_is_refused(tiny_repo: Path) -> None:
    folder = tiny_repo / "tiny" / "1"
    meta = ModelMetadata.read(folder)
    meta.preprocessing.size = 48
    meta.write(folder)
    with pytest.raises(ModelLoadError, match="input shape"):
        load(tiny_repo)


def test_corrupt_model_file_is_refused(tiny_repo: Path) -> None:
    (tiny_repo / "tiny" / "1" / "model.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load(tiny_repo)


@pytest.mark.skipif(cuda_available(), reason="checks the CPU-only build")
def test_asking_for_cuda_without_it_fails_loudly(tiny_repo: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA"):
        load(tiny_repo, providers="cuda")


def test_precision_choice(tmp_path: Path) -> None:
    make_repository(tmp_path)
    version = resolve(tmp_path, "tiny")
    assert choose_precision(version, "auto", "cpu") == "fp32"
    version.metadata.files.update({"int8": "a.onnx", "fp16": "b.onnx"})
    assert choose_precision(version, "auto", "cpu") == "int8"
    assert choose_precision(version, "fp16", "cpu") == "fp16"


def test_softmax_is_stable() -> None:
    probs = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]], dtype=np.float32))
    assert np.allclose(probs, [[1.0, 0.0], [0.5, 0.5]])


def test_on_cuda_batches_are_padded_to_at_most_two_shapes(tiny_repo: Path) -> None:
    runtime = load(tiny_repo)
    runtime.provider = "cuda"  # the shapes only: CI has no GPU
    assert runtime.batch_shapes(64) == [32, 64]
    assert runtime.batch_shapes(32) == [32]
    assert runtime.batch_shapes(8) == [8]


def test_on_cuda_warm_up_runs_each_shape_twice_the_second_time_on_varied_pixels(tiny_repo: Path) -> None:
    # On an H200 the run after one warm-up run of a shape still took 6 s (decision 0016).
    runtime = load(tiny_repo)
    runtime.provider = "cuda"  # the calls only: CI has no GPU
    seen: list[tuple[int, bool]] = []

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        seen.append((len(pixels), bool((pixels == pixels.flat[0]).all())))  # (size, one uniform colour?)
        return {}

    runtime.run = run  # type: ignore[method-assign]
    assert runtime.warm_up(64) == [32, 64]
    assert seen == [(32, True), (32, False), (64, True), (64, False)]


def test_on_cpu_warm_up_runs_each_shape_once(tiny_repo: Path) -> None:
    runtime = load(tiny_repo)
    sizes: list[int] = []
    real_run = runtime.run

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(pixels))
        return real_run(pixels)

    runtime.run = run  # type: ignore[method-assign]
    assert runtime.warm_up(16) == [1, 16]
    assert sizes == [1, 16]

"""A smoke run of the export steps on the committed photos, served by the app afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.preprocess import decode
from app.repository import resolve
from app.runtime import softmax
from app.schema import Preprocessing
from app.settings import Settings
from export import ensemble as ensemble_step
from export import posthoc
from export.cli import main
from export.convert import onnx_outputs, read_onnx_metadata
from export.steps import int8_drops
from tests.conftest import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_then_package_produces_a_servable_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models" / "smoke"
    # The same catalogue, split, classes and size for every step, and a version folder under `out`.
    same_data = ["--data", str(CATALOGUE), "--work", str(tmp_path / "work"), "--size", "48", "--min-class-count", "2"]
    same_out = ["--out", str(out), "--bench-seconds", "0.2"]
    assert main(["train", *same_data, "--epochs", "1", "--warmup-epochs", "1"]) == 0
    assert main(["package", *same_data, *same_out, "--max-int8-drop", "1.0"]) == 0
    folder = out / "1"
    for name in (
        "model.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
        "model.json",
        "README.md",
        "metrics.json",
        "reliability.png",
        "errors.png",
        "confusion_articleType.png",
        "per_class_report.json",
    ):
        assert (folder / name).is_file(), name
    assert (tmp_path / "work" / "checkpoints" / "best.pt").is_file()
    history = json.loads((tmp_path / "work" / "history.json").read_text())
    assert len(history) == 2
    (stage,) = json.loads((tmp_path / "work" / "lineage.json").read_text())["stages"]
    assert stage["command"].startswith("vitrine export train --data") and stage["history"] == history
    card = (folder / "README.md").read_text()
    assert stage["command"] in card and "vitrine export package --data" in card  # the two commands that built it

    # Metadata round trip: the sidecar and the ONNX metadata describe the same heads and preprocessing.
    version = resolve(tmp_path / "models", "smoke")
    embedded = read_onnx_metadata(folder / "model.onnx")
    assert embedded.heads == version.metadata.heads and embedded.preprocessing == version.metadata.preprocessing
    assert version.metadata.preprocessing.size == 48
    assert set(version.metadata.metrics) == {"fp32", "int8", "fp16"}
    assert (
        onnx.load(str(folder / "model.int8.onnx")).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    )

    # The default config fits a memory vote; it is in the graph exactly when some head kept a weight
    # (on 5 validation photos none may be significant).
    card = (folder / "README.md").read_text()
    assert "## Memory vote" in card
    voting = "Heads and weights w: none." not in card
    assert voting == any(node.op_type == "TopK" for node in onnx.load(str(folder / "model.int8.onnx")).graph.node)
    assert voting == (version.metadata.memory_vote is not None)

    # The post-hoc comparison reads the work folder's own split and config.
    assert posthoc.main(["--work", str(tmp_path / "work"), "--model", str(folder / "model.int8.onnx")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 2 * len(version.metadata.heads)
    assert table[2].startswith("| articleType | val | ")

    # The packaging steps alone, into the work folder: the same code as `package`, so the same answers.
    assert main(["convert", *same_data[:2], "--work", str(tmp_path / "untrained")]) == 2
    assert "convert: no trained checkpoint at " in capsys.readouterr().err
    pixels = np.stack([decode(p.read_bytes(), Preprocessing(size=48)) for p in sorted(CATALOGUE.glob("*.jpg"))[:8]])
    assert main(["convert", *same_data, "--file", str(tmp_path / "alone" / "model.onnx")]) == 0
    alone = onnx_outputs(tmp_path / "alone" / "model.onnx", pixels)
    packaged = onnx_outputs(folder / "model.onnx", pixels)
    assert read_onnx_metadata(tmp_path / "alone" / "model.onnx").heads == version.metadata.heads
    for name, value in packaged.items():
        np.testing.assert_allclose(alone[name], value, atol=1e-5)
    capsys.readouterr()
    quantize = ["quantize", *same_data, "--model", str(folder), "--dir", str(tmp_path / "q"), "--bench-seconds", "0.1"]
    assert main([*quantize, "--max-int8-drop", "1.0"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [row.split(" | ")[0] for row in table[2:-1]] == [f"| {h.name}" for h in version.metadata.heads]
    assert table[-1].startswith("CPU images/s at batch 32: fp32 ")
    for name, value in onnx_outputs(folder / "model.int8.onnx", pixels).items():  # same calibration photos
        np.testing.assert_allclose(onnx_outputs(tmp_path / "q" / "model.int8.onnx", pixels)[name], value, atol=1e-6)
    assert (tmp_path / "q" / "model.fp16.onnx").is_file()
    for done in ("model.int8.onnx", "model.fp16.onnx"):
        assert main(["quantize", *same_data, "--model", str(folder / done)]) == 2
        assert "give the FP32 file" in capsys.readouterr().err
    # A file not in a version folder is evaluated from its own metadata; a version's against its record.
    report, no_size = tmp_path / "report", [*same_data[:4], *same_data[6:]]  # the size is the model's
    assert (
        main(["evaluate", *no_size, "--model", str(tmp_path / "q" / "model.int8.onnx"), "--report", str(report)]) == 0
    )
    evaluated = json.loads((report / "metrics.json").read_text())
    assert {k: v for k, v in evaluated.items() if k.endswith(".top1")} == {
        k: v for k, v in version.metadata.metrics["int8"].items() if k.endswith(".top1")
    }
    assert (report / "errors.png").is_file() and (report / "per_class_report.json").is_file()
    capsys.readouterr()
    assert main(["evaluate", *same_data, "--model", str(folder), "--precision", "fp32"]) == 0
    rows = capsys.readouterr().out.splitlines()[3:]
    assert len(rows) == len(version.metadata.heads)
    for row, head in zip(rows, version.metadata.heads, strict=True):
        _, top1, recorded, *_ = row.strip("| ").split(" | ")
        assert top1 == recorded == f"{version.metadata.metrics['fp32'][f'{head.name}.top1']:.4f}"
    assert (tmp_path / "work" / "evaluation" / "smoke-v1-fp32-test" / "metrics.json").is_file()
    assert main(["evaluate", *same_data, "--model", str(folder), "--subset", "val"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert " on 5 val photos" in printed[0] and all(row.split(" | ")[2] == "-" for row in printed[3:])
    # Another split of the same photos (another seed): the version's test photos are no longer the data's.
    config = (ROOT / "export" / "configs" / "product-classifier.toml").read_text().replace("seed = 1234", "seed = 99")
    (tmp_path / "seed99.toml").write_text(config)
    other_split = [*same_data, "--config", str(tmp_path / "seed99.toml")]
    other_split[other_split.index("--work") + 1] = str(tmp_path / "work99")
    assert main(["evaluate", *other_split, "--model", str(folder)]) == 2
    assert "the test split of this data differs from the one" in capsys.readouterr().err
    assert main(["evaluate", *no_size, "--size", "40", "--model", str(folder)]) == 2
    assert (
        capsys.readouterr().err == "vitrine export evaluate: the data is at 40 px, the model reads 48 (pass --size)\n"
    )
    assert main(["evaluate", *same_data, "--model", str(folder.parent / "9")]) == 2
    assert "No such file or directory" in capsys.readouterr().err

    settings = Settings(
        model_repository=tmp_path / "models", model_name="smoke", providers="cpu", intra_op_threads=1, max_batch_size=4
    )
    with TestClient(create_app(settings)) as client:
        photo = sorted(CATALOGUE.glob("*.jpg"))[0].read_bytes()
        body = client.post("/classify", files=[("images", ("a.jpg", photo, "image/jpeg"))]).json()
        assert body["model"]["precision"] == "int8" and body["results"][0]["status"] == "ok"
        assert body["results"][0]["category"]["label"] in version.metadata.heads[0].labels

    # The same version twice as an ensemble: the CLI step writes a full folder that the service loads, and
    # two identical members must answer what the member answers.
    # A limit below zero (refused on the command line, so given to the check itself): only INT8 beating FP32
    # on every head would pass.
    failing = ["ensemble", "--members", str(folder), str(folder), *same_data, *same_out]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ensemble_step, "int8_drops", lambda metrics, heads, limit: int8_drops(metrics, heads, -0.01))
        assert main(failing) == 1
    assert capsys.readouterr().err.startswith("vitrine export ensemble: INT8 loses ")
    ensemble_args = ["--members", str(folder), str(folder), *same_data, *same_out, "--max-int8-drop", "1.0"]
    assert main(["ensemble", *ensemble_args, "--overwrite", "--version", "2"]) == 0
    ensemble = out / "2"
    for name in ("model.onnx", "model.onnx.m0.data", "model.onnx.m1.data", "model.int8.onnx", "model.fp16.onnx"):
        assert (ensemble / name).is_file(), name
    member_card = (ensemble / "member-1.md").read_text()
    assert member_card.startswith("# smoke v1") and "## How to reproduce" in member_card
    assert "](errors.png)" not in member_card  # its plots are the member's, not the ensemble's
    merged = resolve(tmp_path / "models", "smoke")
    assert merged.metadata.version == 2 and merged.metadata.members is not None and len(merged.metadata.members) == 2
    assert set(merged.metadata.metrics) == {"fp32", "int8", "fp16"}
    assert "the members run one by one" in (ensemble / "README.md").read_text()
    assert main(["quantize", *same_data, "--model", str(ensemble)]) == 2
    assert "is an ensemble: quantise its members" in capsys.readouterr().err
    pixels = np.stack([decode(p.read_bytes(), Preprocessing(size=48)) for p in sorted(CATALOGUE.glob("*.jpg"))[:8]])
    single, both = onnx_outputs(folder / "model.int8.onnx", pixels), onnx_outputs(ensemble / "model.int8.onnx", pixels)
    for head in merged.metadata.heads:
        np.testing.assert_allclose(softmax(both[head.output]), softmax(single[head.output]), atol=1e-5)
    with TestClient(create_app(settings)) as client:
        body = client.post("/classify", files=[("images", ("a.jpg", photo, "image/jpeg"))]).json()
        assert body["model"]["version"] == 2 and body["results"][0]["status"] == "ok"

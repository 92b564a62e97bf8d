"""docs/own-model.md end to end: a Keras CNN trained on Fashion-MNIST, exported, imported, served over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from app.settings import Settings
from export import fashion_mnist, keras_example
from export.cli import main
from tests.live import running

IMAGES = 64


@pytest.mark.slow
def test_a_keras_fashion_mnist_model_answers_classify_with_its_ten_classes(tmp_path: Path) -> None:
    # Debian's dataset-fashion-mnist package (installed by `make test` and CI, see the Makefile).
    assert fashion_mnist.DEBIAN_FOLDER.is_dir(), "apt-get install dataset-fashion-mnist (make fashion-mnist)"
    source = tmp_path / "fashion.onnx"
    trained = keras_example.train(source, limit=6000, epochs=1)
    assert trained["accuracy"] > 0.6  # a tenth is chance: the network learnt something in one short epoch
    repo = tmp_path / "models"
    labels = source.with_suffix(".labels.txt")
    # Keras took [batch, 28, 28, 1] floats scaled to [0, 1]; the photos are white on black.
    command = ["import", str(source), "--labels", str(labels), "--input", "unit", "--pad-colour", "0,0,0"]
    assert main([*command, "--repository", str(repo), "--name", "fashion"]) == 0

    images, truth = fashion_mnist.load("t10k")
    images, truth = images[:IMAGES], truth[:IMAGES]
    original = ort.InferenceSession(str(source))
    reference = original.run(None, {original.get_inputs()[0].name: images[..., None].astype(np.float32) / 255})[0]
    settings = Settings(model_repository=repo, model_name="fashion", providers="cpu", intra_op_threads=1)
    with running(settings) as url:
        files = [("images", (f"{i}.png", fashion_mnist.png(image), "image/png")) for i, image in enumerate(images)]
        answer = httpx.post(f"{url}/classify", files=files, params={"top_k": 10}, timeout=30).json()
        described = httpx.get(f"{url}/models").json()["models"][0]
    assert described["heads"][0]["labels"] == fashion_mnist.LABELS
    results = answer["results"]
    assert [r["status"] for r in results] == ["ok"] * IMAGES
    for result, want in zip(results, reference, strict=True):
        assert {entry["label"] for entry in result["top_k"]} == set(fashion_mnist.LABELS)
        got = {entry["label"]: entry["score"] for entry in result["top_k"]}
        assert [got[label] for label in fashion_mnist.LABELS] == pytest.approx(want.tolist(), abs=1e-4)
    predicted = [fashion_mnist.LABELS.index(r["category"]["label"]) for r in results]
    assert np.mean(np.array(predicted) == truth) > 0.6

"""What every peer shares: its model session (`PeerModel`) and the /classify answer it returns, shaped as
Vitrine's (the service's own HeadView: labels, rounding, top-k)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.answers import HeadView
from app.runtime import softmax
from app.schema import Head, ModelMetadata


def classify_results(
    logits: dict[str, np.ndarray], heads: dict[str, Head], n_images: int, top_k: int, indexed: bool = True
) -> list[dict[str, Any]]:
    """Per image: the best label per category level (article at the top) and the top-k article types.

    `index` is the image's position in its request, as in Vitrine's answers. A peer whose framework merges
    several requests into one batch cannot know it (the batch is split back per request after the call),
    so it passes `indexed=False` and its results carry no `index` rather than one that is wrong."""
    views = {level: HeadView(head) for level, head in heads.items()}
    probs = {level: softmax(np.asarray(logits[v.output], dtype=np.float32)) for level, v in views.items()}
    results: list[dict[str, Any]] = []
    for i in range(n_images):
        category: dict[str, Any] = {}
        for level, view in views.items():
            entry = view.best(probs[level][i])
            if level == "article":
                category.update(entry)
            else:
                category[level] = entry
        top = views["article"].top(probs["article"][i], top_k)
        result: dict[str, Any] = {"index": i} if indexed else {}
        result.update(status="ok", category=category, top_k=top)
        results.append(result)
    return results


class PeerModel:
    """One onnxruntime session on the CPU with the model's labels; `answer` runs decoded pixels.

    Each peer decodes its own way (inline, or on a thread pool) and hands the pixels here, so every peer
    runs the same session settings and builds the same answers."""

    def __init__(self, model: Path, threads: int, metadata: ModelMetadata | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.metadata = metadata or ModelMetadata.read(model.parent)
        self.spec = self.metadata.preprocessing
        self.heads = {str(h.level): h for h in self.metadata.heads if h.role == "category"}
        # Every output, as the service fetches them (attribute heads and embedding included).
        self.outputs = [o.name for o in self.session.get_outputs()]

    def answer(self, pixels: np.ndarray, top_k: int = 5, indexed: bool = True) -> list[dict[str, Any]]:
        """One model run over a batch of pixels: a /classify result per image (`indexed`: see classify_results)."""
        raw = dict(zip(self.outputs, self.session.run(self.outputs, {self.spec.input_name: pixels}), strict=True))
        return classify_results(raw, self.heads, len(pixels), top_k, indexed)

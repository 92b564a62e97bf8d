"""The /classify answer both peers return, shaped as Vitrine's (the service's own HeadView: labels, rounding, top-k)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.answers import HeadView
from app.runtime import softmax
from app.schema import Head


def classify_results(
    logits: dict[str, np.ndarray], heads: dict[str, Head], n_images: int, top_k: int
) -> list[dict[str, Any]]:
    """Per image: the best label per category level (article at the top) and the top-k article types."""
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
        results.append({"index": i, "status": "ok", "category": category, "top_k": top})
    return results

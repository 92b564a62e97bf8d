"""The /classify answer both peers return, shaped as Vitrine's (same labels, rounding and top-k)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.runtime import softmax
from app.schema import Head


def classify_results(
    logits: dict[str, np.ndarray], heads: dict[str, Head], n_images: int, top_k: int
) -> list[dict[str, Any]]:
    """Per image: the best label per category level (article at the top) and the top-k article types."""
    probs = {level: softmax(np.asarray(logits[h.output], dtype=np.float32)) for level, h in heads.items()}
    article = heads["article"]
    results: list[dict[str, Any]] = []
    for i in range(n_images):
        category: dict[str, Any] = {}
        for level, head in heads.items():
            p = probs[level][i]
            k = int(p.argmax())
            entry = {"label": head.labels[k], "score": round(float(p[k]), 6)}
            if level == "article":
                category.update(entry)
            else:
                category[level] = entry
        p = probs["article"][i]
        top = [{"label": article.labels[j], "score": round(float(p[j]), 6)} for j in np.argsort(-p)[:top_k]]
        results.append({"index": i, "status": "ok", "category": category, "top_k": top})
    return results

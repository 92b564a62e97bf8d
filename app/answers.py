"""How a head's probabilities become answer entries (label and score), for the service and the benchmark peers.

Only numpy and the model schema: the BentoML peer imports it from its own virtual environment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.schema import Head


class HeadView:
    """A head's labels and output name, prepared once so answers need no lookups (the service's and the
    benchmark peers' answers are shaped by it)."""

    def __init__(self, head: Head) -> None:
        self.key = head.key
        self.output = head.output
        self.labels = head.labels

    def best(self, probs: np.ndarray) -> dict[str, Any]:
        k = int(probs.argmax())
        return {"label": self.labels[k], "score": round(float(probs[k]), 6)}

    def top(self, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
        k = min(k, len(probs))
        idx = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
        idx = idx[np.argsort(-probs[idx], kind="stable")]
        return [{"label": self.labels[i], "score": round(float(probs[i]), 6)} for i in idx]

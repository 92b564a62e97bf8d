"""Temperature scaling: one temperature per head, fitted on the validation split, so scores mean what they say."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from app.runtime import softmax
from export.data import IGNORE


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation NLL of softmax(log_probs / T) over labelled rows."""
    keep = labels != IGNORE
    z, y = log_probs[keep].astype(np.float64), labels[keep]
    if len(y) == 0:
        return 1.0

    def nll(t: float) -> float:
        scaled = z / t
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float((log_norm - scaled[np.arange(len(y)), y]).mean())

    result = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-4})
    return float(result.x)


def _log(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: the logits up to a per-row constant, which softmax ignores."""
    logs: np.ndarray = np.log(np.clip(probs, 1e-12, None))
    return logs


def fit_temperatures(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """A temperature per head from softmax outputs."""
    return {name: fit_temperature(_log(p), labels[name]) for name, p in probs.items() if name in labels}


def apply_temperatures(probs: dict[str, np.ndarray], temperatures: dict[str, float]) -> dict[str, np.ndarray]:
    """Softmax outputs as the network answers them once `temperatures` are set, without running it again;
    outputs without a temperature (the embedding) pass through."""
    return {name: softmax(_log(p) / temperatures[name]) if name in temperatures else p for name, p in probs.items()}

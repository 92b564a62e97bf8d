"""Temperature scaling recovers the temperature that made scores over- or under-confident."""

from __future__ import annotations

import numpy as np

from export.calibration import fit_temperature, fit_temperatures
from export.data import IGNORE


def sample(temperature: float, n: int = 4000, classes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); returns (z * temperature, labels): logits off by a known factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, classes))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z * temperature, labels


def test_recovers_overconfidence() -> None:
    logits, labels = sample(3.0)
    assert abs(fit_temperature(logits, labels) - 3.0) < 0.3


def test_recovers_underconfidence_and_ignores_masked_rows() -> None:
    logits, labels = sample(0.5)
    labels[:500] = IGNORE
    assert abs(fit_temperature(logits, labels) - 0.5) < 0.08


def test_per_head_from_probabilities() -> None:
    logits, labels = sample(2.0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    fitted = fit_temperatures({"articleType": probs, "embedding": probs}, {"articleType": labels})
    assert set(fitted) == {"articleType"} and abs(fitted["articleType"] - 2.0) < 0.25

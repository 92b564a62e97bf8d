"""Tests for export/posthoc.py: the post-hoc candidates on hand-checked cases."""

from __future__ import annotations

import numpy as np

from export.data import IGNORE
from export.posthoc import colour_histograms, mask_near_duplicates, neighbour_votes, prior_adjusted, top1


def test_top1_skips_unlabelled_rows() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert top1(logits, np.array([0, 0, IGNORE])) == 0.5


def test_prior_adjustment_favours_frequent_classes() -> None:
    logits = np.array([[0.0, 0.1]])
    train = np.array([0] * 99 + [1] + [IGNORE] * 5)
    assert prior_adjusted(logits, train, 0.0).argmax() == 1
    assert prior_adjusted(logits, train, 0.5).argmax() == 0
    assert np.allclose(prior_adjusted(logits, train, 1.0) - logits, np.log([100.0, 2.0]))


def test_neighbour_votes_weigh_by_similarity_and_ignore_unlabelled() -> None:
    similarity = np.array([[1.0, 0.9, 0.95, 0.1]])
    votes = neighbour_votes(similarity, np.array([0, 1, IGNORE, 1]), 2, k=3, temperature=0.1)
    expected = np.array([1.0, np.exp(-1.0)])
    assert np.allclose(votes, expected / expected.sum())


def test_near_duplicates_are_masked_and_distinct_photos_kept() -> None:
    rng = np.random.default_rng(0)
    memory = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    query = memory[:1].copy()
    query[0, 0, 0] = np.clip(query[0, 0, 0].astype(int) + 40, 0, 255)  # a few levels off: still the same photo
    masked = mask_near_duplicates(np.array([[0.99, 0.5, 0.4, 0.3]]), query, memory, candidates=3)
    assert masked[0, 0] == -np.inf and np.isfinite(masked[0, 1:]).all()


def test_colour_histograms_count_only_the_product() -> None:
    image = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    image[0, :4, :4] = (200, 0, 0)  # red square on white
    hist = colour_histograms(image, bins=2) ** 2
    assert hist.shape == (1, 8) and np.isclose(hist.sum(), 1.0)
    assert hist[0, 4] == 1.0  # (r, g, b) bins (1, 0, 0): all foreground pixels are red

"""A memory of the training photos inside the graph: the k most similar ones vote, blended into the heads' softmax.

Catalogue labels such as season, gender and usage belong to a product line more than to what a photo
shows, and a catalogue holds many photos of one line (the same style in other colours, other shots).
A nearest-neighbour vote over the training photos' embeddings recovers some of that. Measured with
`python -m export.posthoc` on version 2: +1 to +1.5 points of season top-1, +0.5 to +1 on gender and usage,
nothing on article type, and the same with each query's near-duplicate photos masked out of the memory,
as the blind hold-out was built.

The memory is the training split's embeddings, PCA-projected to a few dimensions, re-normalised and
stored as int8 with a scale per dimension, so it adds a few MB to each model file; it runs inside the
ONNX graph (MatMul, TopK, Gather), so the service, the benchmark and a GPU run it unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from sklearn.decomposition import PCA
from torch import nn

from export.config import MemoryConfig
from export.data import IGNORE, Catalogue
from export.network import MultiHeadClassifier
from export.train import predict

log = logging.getLogger(__name__)

BLENDS = np.round(np.linspace(0.0, 1.0, 11), 2)


class NeighbourMemory(nn.Module):
    """Blends each chosen head's softmax with the label vote of the k most similar memory photos.

    Outputs of blended heads are log-probabilities (their softmax is the blend); other heads pass through.
    """

    mean: torch.Tensor
    projection: torch.Tensor
    vectors: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        mean: np.ndarray,
        projection: np.ndarray,
        vectors: np.ndarray,
        labels: dict[str, np.ndarray],
        classes: dict[str, int],
        *,
        k: int,
        temperature: float,
        blend: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if len(vectors) < 1:
            raise ValueError("the memory needs at least one photo")
        self.k = min(k, len(vectors))
        self.dimensions = vectors.shape[1]
        self.temperature = temperature
        self.blend = dict(blend or {})
        # int8 with a scale per dimension: a quarter of the float size; the runtime folds the Cast * scale once.
        scale = np.maximum(np.abs(vectors).max(axis=0), 1e-8) / 127.0
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float32))
        self.register_buffer("vectors", torch.as_tensor(np.round(vectors / scale), dtype=torch.int8))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.heads = list(labels)
        for index, head in enumerate(self.heads):
            # An unlabelled photo votes for class `classes[head]`, which no one-hot column matches.
            y = np.where(labels[head] == IGNORE, classes[head], labels[head])
            self.register_buffer(f"labels_{index}", torch.as_tensor(y, dtype=torch.int32))
            self.register_buffer(f"classes_{index}", torch.arange(classes[head], dtype=torch.int32))

    def neighbours(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights exp((sim - max sim) / T) and memory rows of each query's k nearest photos."""
        query = F.normalize((embedding - self.mean) @ self.projection, dim=1)
        memory = self.vectors.to(torch.float32) * self.scale
        similarity, index = torch.topk(query @ memory.T, self.k, dim=1)
        return torch.exp((similarity - similarity[:, :1]) / self.temperature), index

    def votes(self, head: str, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The neighbours' weighted label distribution for one head, (N, classes); all zero if none is labelled."""
        position = self.heads.index(head)
        # index_select exports as Gather; fancy indexing exported as GatherND, which onnxruntime's CUDA
        # provider left on the CPU (a device-host copy per run; decision 0016).
        labels = getattr(self, f"labels_{position}").index_select(0, index.reshape(-1)).reshape(index.shape)
        one_hot = (labels.unsqueeze(-1) == getattr(self, f"classes_{position}")).to(weights.dtype)
        votes: torch.Tensor = (weights.unsqueeze(-1) * one_hot).sum(dim=1)
        return votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, logits: dict[str, torch.Tensor], embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        active = {head: weight for head, weight in self.blend.items() if weight > 0}
        if not active:
            return logits
        weights, index = self.neighbours(embedding)
        out = dict(logits)
        for head, weight in active.items():
            mix = (1.0 - weight) * torch.softmax(logits[head], dim=1) + weight * self.votes(head, weights, index)
            out[head] = torch.log(mix.clamp_min(1e-30))
        return out


def correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per labelled row, whether the top-1 class is right."""
    keep = labels != IGNORE
    right: np.ndarray = probs[keep].argmax(axis=1) == labels[keep]
    return right


def gain_p_value(with_vote: np.ndarray, without: np.ndarray) -> float:
    """One-sided exact McNemar test: the chance of at least this many net fixes if the vote changed nothing."""
    fixed = int((with_vote & ~without).sum())
    broken = int((~with_vote & without).sum())
    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue)


def fit_memory(
    model: MultiHeadClassifier,
    train: Catalogue,
    val: Catalogue,
    config: MemoryConfig,
    val_outputs: dict[str, np.ndarray] | None = None,
) -> NeighbourMemory:
    """Build the memory from the training split and choose each head's blend weight on the validation split.

    Each head takes the weight with the best validation top-1 (the smallest on ties), and keeps it only
    if the gain over no vote is significant (`config.significance`); otherwise its weight is 0.
    `val_outputs`: the model's answers on `val` (`predict` without a vote), when the caller has them.
    """
    model.memory = None  # the embeddings and probabilities of the model without a vote
    embeddings = predict(model, train.pixels)["embedding"]
    dimensions = min(config.dimensions, embeddings.shape[1], len(embeddings))
    pca = PCA(n_components=dimensions, random_state=0).fit(embeddings)
    vectors = pca.transform(embeddings)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    classes = {head: len(names) for head, names in train.classes.items()}
    memory = NeighbourMemory(
        pca.mean_,
        pca.components_.T,
        vectors,
        train.labels,
        classes,
        k=config.neighbours,
        temperature=config.temperature,
    )
    memory.eval()
    outputs = predict(model, val.pixels) if val_outputs is None else val_outputs
    with torch.no_grad():
        weights, index = memory.neighbours(torch.from_numpy(outputs["embedding"]))
        blend: dict[str, float] = {}
        for head in memory.heads:
            votes = memory.votes(head, weights, index).numpy()
            right = {float(w): correct((1 - w) * outputs[head] + w * votes, val.labels[head]) for w in BLENDS}
            best = max(right, key=lambda w: (right[w].mean() if len(right[w]) else 0.0, -w))
            p_value = gain_p_value(right[best], right[0.0])
            blend[head] = best if p_value < config.significance else 0.0
            log.info(
                "memory vote on %s: validation top-1 %.4f without, %.4f with weight %.1f (p = %.3f) -> weight %.1f",
                head,
                right[0.0].mean(),
                right[best].mean(),
                best,
                p_value,
                blend[head],
            )
    memory.blend = blend
    return memory

"""What /models says of the model served: identity, input, heads and labels, and how the service runs it."""

from __future__ import annotations

from typing import Any

from app.decoder import Decoder
from app.responses import ModelRef
from app.schema import ModelMetadata
from app.settings import Layout, Settings


def serving(layout: Layout, settings: Settings, decoder: Decoder[Any]) -> dict[str, Any]:
    """How this service runs the model (`Settings.layout`, decided from the provider when not set)."""
    return {
        "model_workers": layout.model_workers,
        "intra_op_threads_per_worker": layout.intra_op_threads,
        "max_batch_size": layout.max_batch_size,
        "max_batch_delay_ms": settings.max_batch_delay_ms,
        "decode_on": decoder.where,
        "decode_workers": decoder.workers,
    }


def description(meta: ModelMetadata, model_ref: ModelRef, serving: dict[str, Any]) -> dict[str, Any]:
    """Identity, provider in use, input, heads and labels, metrics, architecture (an ensemble's members), the
    memory vote, and how the service runs it."""
    spec = meta.preprocessing
    return {
        **model_ref.model_dump(),
        "input": {"size": spec.size, "dtype": spec.dtype, "layout": spec.layout},
        "preprocessing": spec.model_dump(mode="json"),
        "heads": [
            {"name": h.name, "key": h.key, "role": h.role, "level": h.level, "labels": h.labels} for h in meta.heads
        ],
        "metrics": meta.metrics,
        "architecture": meta.architecture,
        "members": meta.members,
        "memory_vote": meta.memory_vote.model_dump() if meta.memory_vote else None,
        "serving": serving,
    }

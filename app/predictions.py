"""Answer shaping: a model row becomes an image's /classify or /attributes result."""

from __future__ import annotations

from typing import Any

from app.answers import HeadView
from app.batcher import Row
from app.errors import ImageError, NotAvailable
from app.metrics import Metrics
from app.schema import Head, ModelMetadata


class Predictions:
    """The served model's heads, prepared once, turning rows into results; each top-1 score is observed in
    `vitrine_prediction_score`."""

    def __init__(self, metadata: ModelMetadata, metrics: Metrics) -> None:
        self.article = _optional_view(metadata.head_by_level("article"))
        self.master = _optional_view(metadata.head_by_level("master"))
        self.sub = _optional_view(metadata.head_by_level("sub"))
        self.finest = self.article or self.sub or self.master  # what /classify's label and top_k come from
        self.attribute_views = [HeadView(h) for h in metadata.attribute_heads]
        views = [v for v in (self.article, self.sub, self.master, *self.attribute_views) if v is not None]
        # The labelled metric children of the hot path, looked up once instead of per image.
        self._scores = {v.key: metrics.prediction_score.labels(v.key) for v in views}

    def check_classify(self) -> None:
        """NotAvailable (404) when the model has no category head for /classify to answer from."""
        if self.finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")

    def classify(self, rows: list[Row | ImageError], top_k: int) -> list[dict[str, Any]]:
        """/classify's results: the finest category with the coarser ones, and its top-k, per image."""
        finest = self.finest
        if finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(_error(index, row))
                continue
            best = self._best(finest, row)
            category = {**best}
            for name, view in (("master", self.master), ("sub", self.sub)):
                if view is not None:  # the finest level's own entry repeats its answer (not computed again)
                    category[name] = best if view is finest else self._best(view, row)
            top = finest.top(row[finest.output], top_k)
            results.append({"index": index, "status": "ok", "category": category, "top_k": top})
        return results

    def attributes(self, rows: list[Row | ImageError], top_k: int) -> list[dict[str, Any]]:
        """/attributes' results: every attribute head's label and score with its top-k, per image."""
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(_error(index, row))
                continue
            attributes = {
                view.key: {**self._best(view, row), "top_k": view.top(row[view.output], top_k)}
                for view in self.attribute_views
            }
            results.append({"index": index, "status": "ok", "attributes": attributes})
        return results

    def _best(self, view: HeadView, row: Row) -> dict[str, Any]:
        best = view.best(row[view.output])
        self._scores[view.key].observe(best["score"])
        return best


def _error(index: int, error: ImageError) -> dict[str, Any]:
    return {"index": index, "status": "error", "error": {"code": error.code, "message": error.message}}


def _optional_view(head: Head | None) -> HeadView | None:
    return HeadView(head) if head is not None else None

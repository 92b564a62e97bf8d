"""Answer shaping: a model row becomes an image's /classify or /attributes result."""

from __future__ import annotations

from typing import Any, cast

from app.answers import HeadView
from app.batcher import Row
from app.errors import ImageError, NotAvailable
from app.metrics import Metrics
from app.responses import Attribute, AttributesResult, Category, ClassifyResult, ErrorBody, Scored
from app.schema import Head, ModelMetadata


class Predictions:
    """The served model's heads, prepared once, turning rows into results; each top-1 score is observed in
    `vitrine_prediction_score`.

    Only the fields an answer has are set, and answers are serialised without the unset ones, so an error
    result carries no `category` and a model without a sub-category head gives no `sub`."""

    def __init__(self, metadata: ModelMetadata, metrics: Metrics) -> None:
        self.article = _optional_view(metadata.head_by_level("article"))
        self.master = _optional_view(metadata.head_by_level("master"))
        self.sub = _optional_view(metadata.head_by_level("sub"))
        self.finest = self.article or self.sub or self.master  # what /classify's label and top_k come from
        self.attribute_views = [HeadView(h) for h in metadata.attribute_heads]
        views = [v for v in (self.article, self.sub, self.master, *self.attribute_views) if v is not None]
        # The labelled metric children of the hot path, looked up once instead of per image.
        self._scores = {v.key: metrics.prediction_score.labels(v.key) for v in views}
        for endpoint in ("classify", "attributes"):  # their answered images are exported from 0, before any
            metrics.images.labels(endpoint, "ok")  # request, so that rates over them exist from the start

    def check_classify(self) -> None:
        """NotAvailable (404) when the model has no category head for /classify to answer from."""
        if self.finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")

    def classify(self, rows: list[Row | ImageError], top_k: int) -> list[ClassifyResult]:
        """/classify's results: the finest category with the coarser ones, and its top-k, per image."""
        finest = self.finest
        if finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(ClassifyResult(index=index, status="error", error=_error(row)))
                continue
            best = self._best(finest, row)
            coarser = {}
            for name, view in (("master", self.master), ("sub", self.sub)):
                if view is not None:  # the finest level's own entry repeats its answer (not computed again)
                    coarser[name] = best if view is finest else self._best(view, row)
            category = Category(label=best["label"], score=best["score"], **coarser)
            top = _scored(finest.top(row[finest.output], top_k))
            results.append(ClassifyResult(index=index, status="ok", category=category, top_k=top))
        return results

    def attributes(self, rows: list[Row | ImageError], top_k: int) -> list[AttributesResult]:
        """/attributes' results: every attribute head's label and score with its top-k, per image."""
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(AttributesResult(index=index, status="error", error=_error(row)))
                continue
            attributes = {}
            for view in self.attribute_views:
                best = self._best(view, row)
                top = _scored(view.top(row[view.output], top_k))
                attributes[view.key] = Attribute(label=best["label"], score=best["score"], top_k=top)
            results.append(AttributesResult(index=index, status="ok", attributes=attributes))
        return results

    def _best(self, view: HeadView, row: Row) -> Scored:
        best = view.best(row[view.output])
        self._scores[view.key].observe(best["score"])
        return Scored(label=best["label"], score=best["score"])


def _scored(entries: list[dict[str, Any]]) -> list[Scored]:
    """A top-k list as HeadView gives it: label and score entries."""
    return cast(list[Scored], entries)


def _error(error: ImageError) -> ErrorBody:
    return ErrorBody(code=error.code, message=error.message)


def _optional_view(head: Head | None) -> HeadView | None:
    return HeadView(head) if head is not None else None

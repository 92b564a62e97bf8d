"""Answer shaping: a model row becomes an image's /classify or /attributes result."""

from __future__ import annotations

from typing import Any, cast

from app.answers import HeadView
from app.batcher import Row
from app.errors import ImageError, NotAvailable
from app.metrics import Metrics
from app.palette import Namer, palette
from app.responses import Attribute, AttributesResult, Category, ClassifyResult, ErrorBody, Scored, Swatch
from app.schema import Head, ModelMetadata
from app.translate import DEFAULT_LANGUAGE, Labels

INPUT_KEY = "vitrine:input"  # a row's model input, kept when a palette is answered (never an output's name)


class Predictions:
    """The served model's heads, prepared once, turning rows into results; each top-1 score is observed in
    `vitrine_prediction_score`.

    Only the fields an answer has are set, and answers are serialised without the unset ones, so an error
    result carries no `category` and a model without a sub-category head gives no `sub`.

    Labels come in each language the model has a table for: the heads' views are prepared once per language,
    so a translated answer costs what an English one does."""

    def __init__(
        self, metadata: ModelMetadata, metrics: Metrics, namer: Namer | None = None, labels: Labels | None = None
    ) -> None:
        self.labels = labels or Labels(metadata, None)
        self.namer = namer  # the palette's, when the version folder has learned shades
        colour = next((h for h in metadata.heads if namer is not None and h.name == namer.shades.head), None)
        self._colour = colour
        self._views = {language: _Views(metadata, self.labels, language) for language in self.labels.languages}
        english = self._views[DEFAULT_LANGUAGE]
        self.article, self.master, self.sub = english.article, english.master, english.sub
        self.finest = english.finest  # what /classify's label and top_k come from
        self.attribute_views = english.attributes
        views = [v for v in (self.article, self.sub, self.master, *self.attribute_views) if v is not None]
        # The labelled metric children of the hot path, looked up once instead of per image.
        self._scores = {v.key: metrics.prediction_score.labels(v.key) for v in views}
        for endpoint in ("classify", "attributes"):  # their answered images are exported from 0, before any
            metrics.images.labels(endpoint, "ok")  # request, so that rates over them exist from the start

    def check_classify(self) -> None:
        """NotAvailable (404) when the model has no category head for /classify to answer from."""
        if self.finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")

    def classify(
        self, rows: list[Row | ImageError], top_k: int, language: str = DEFAULT_LANGUAGE
    ) -> list[ClassifyResult]:
        """/classify's results: the finest category with the coarser ones, and its top-k, per image."""
        views = self._views[language]
        finest = views.finest
        if finest is None:
            raise NotAvailable("the served model has no category heads; /attributes answers its heads")
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(ClassifyResult(index=index, status="error", error=_error(row)))
                continue
            best = self._best(finest, row)
            coarser = {}
            for name, view in (("master", views.master), ("sub", views.sub)):
                if view is not None:  # the finest level's own entry repeats its answer (not computed again)
                    coarser[name] = best if view is finest else self._best(view, row)
            category = Category(label=best["label"], score=best["score"], **coarser)
            top = _scored(finest.top(row[finest.output], top_k))
            results.append(ClassifyResult(index=index, status="ok", category=category, top_k=top))
        return results

    def attributes(
        self, rows: list[Row | ImageError], top_k: int, language: str = DEFAULT_LANGUAGE
    ) -> list[AttributesResult]:
        """/attributes' results: every attribute head's label and score with its top-k, and the product's
        palette (when the model has learned shades), per image."""
        results = []
        for index, row in enumerate(rows):
            if isinstance(row, ImageError):
                results.append(AttributesResult(index=index, status="error", error=_error(row)))
                continue
            attributes: dict[str, Attribute | list[Swatch]] = {}
            for view in self._views[language].attributes:
                best = self._best(view, row)
                top = _scored(view.top(row[view.output], top_k))
                attributes[view.key] = Attribute(label=best["label"], score=best["score"], top_k=top)
            if self.namer is not None and self._colour is not None and INPUT_KEY in row:
                attributes["palette"] = self._palette(row, language)
            results.append(AttributesResult(index=index, status="ok", attributes=attributes))
        return results

    def _palette(self, row: Row, language: str) -> list[Swatch]:
        assert self.namer is not None and self._colour is not None
        colour = self._colour.name
        return [
            Swatch.model_construct(hex=s["hex"], name=self.labels.name(language, colour, s["name"]), share=s["share"])
            for s in palette(self.namer, row[INPUT_KEY], row[self._colour.output])
        ]

    def _best(self, view: HeadView, row: Row) -> Scored:
        best = view.best(row[view.output])
        self._scores[view.key].observe(best["score"])
        return Scored(label=best["label"], score=best["score"])


def _scored(entries: list[dict[str, Any]]) -> list[Scored]:
    """A top-k list as HeadView gives it: label and score entries."""
    return cast(list[Scored], entries)


def _error(error: ImageError) -> ErrorBody:
    return ErrorBody(code=error.code, message=error.message)


class _Views:
    """The heads' views with their labels in one language."""

    def __init__(self, metadata: ModelMetadata, labels: Labels, language: str) -> None:
        translated = labels.head_labels(language)

        def view(head: Head | None) -> HeadView | None:
            return HeadView(head.model_copy(update={"labels": translated[head.name]})) if head is not None else None

        self.article = view(metadata.head_by_level("article"))
        self.master = view(metadata.head_by_level("master"))
        self.sub = view(metadata.head_by_level("sub"))
        self.finest = self.article or self.sub or self.master
        self.attributes = [
            HeadView(h.model_copy(update={"labels": translated[h.name]})) for h in metadata.attribute_heads
        ]

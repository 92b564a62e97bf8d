"""/explain: where in each photo a head found the evidence for a label (a class activation heatmap)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.errors import ImageError
from app.explain import Explanation
from app.responses import ERRORS, ExplainResponse, images_body
from app.routes.deps import FastJSON, core_of, images_of, unless_disconnected
from app.routes.predict import ACCEPT_LANGUAGE, LANG
from app.settings import Settings

HEAD = Query(None, max_length=100, description="The head to explain, by its key (default `article`).")
LABEL = Query(None, max_length=200, description="The label to explain, in English (default each image's top label).")


def routes(settings: Settings) -> APIRouter:
    """The explanation route, its request body documented with the configured image limit."""
    router = APIRouter()

    @router.post(
        "/explain",
        name="explain",
        response_model=ExplainResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": images_body(settings.max_images_per_request)},
        summary="Where each photo shows the evidence for a label",
    )
    async def explain(
        request: Request,
        head: str | None = HEAD,
        label: str | None = LABEL,
        lang: str | None = LANG,
        accept_language: str | None = ACCEPT_LANGUAGE,
    ) -> Response:
        """Per image: the head's label (its top label unless `label` names one), its score, the heat of its
        evidence over the model's square input (`grid`, rows by columns, 0 to 1) and that heat drawn over the
        photo as it was fitted on its white pad (`png`, base64)."""
        core = await core_of(request)
        core.explainer.head(head)  # an unknown head or label, or a model without maps: before reading the body
        core.explainer.label_index(core.explainer.head(head), label)
        language = core.labels.choose(lang, accept_language)
        explained = await unless_disconnected(request, core.explain(await images_of(request), head, label))

        def name(head_name: str, english: str) -> str:
            return core.labels.name(language, head_name, english)

        results = [_result(i, e, name) for i, e in enumerate(explained)]
        return FastJSON({"model": core.model_ref, "results": results}, headers={"Content-Language": language})

    return router


def _result(index: int, item: Explanation | ImageError, name: Any) -> dict[str, Any]:
    if isinstance(item, ImageError):
        return {"index": index, "status": "error", "error": {"code": item.code, "message": item.message}}
    return {"index": index, "status": "ok", "explanation": item.answer(name)}

"""/classify and /attributes: the model's answers for product photos."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from app.responses import ERRORS, AttributesResponse, ClassifyResponse, images_body
from app.routes.deps import FastJSON, core_of, images_of, settings_of, unless_disconnected
from app.settings import Settings

TOP_K = Query(None, ge=1, le=100, description="How many labels to list per head (default 5).")
LANG = Query(
    None,
    max_length=35,
    description="Language of the labels: `en` (default) or `zh` (Simplified Chinese); `/models` lists those the "
    "model has, and one it lacks is answered in English. Without it, the most preferred of `Accept-Language` "
    "that the model has, else English. `Content-Language` says which.",
)
ACCEPT_LANGUAGE = Header(None, include_in_schema=False)


def routes(settings: Settings) -> APIRouter:
    """The prediction routes, their request body documented with the configured image limit."""
    router = APIRouter()
    body = {"requestBody": images_body(settings.max_images_per_request)}

    @router.post(
        "/classify",
        name="classify",
        response_model=ClassifyResponse,
        responses=ERRORS,
        openapi_extra=body,
        summary="Category of each product photo",
    )
    async def classify(
        request: Request,
        top_k: int | None = TOP_K,
        lang: str | None = LANG,
        accept_language: str | None = ACCEPT_LANGUAGE,
    ) -> Response:
        """Article type with its master and sub category, and the top-k article types, per image (for a model
        without an article-type head, its finest category level; 404 for one without category heads)."""
        core = await core_of(request)
        core.predictions.check_classify()  # before reading a body that could not be answered
        language = core.labels.choose(lang, accept_language)
        rows = await unless_disconnected(request, core.infer(await images_of(request), "classify"))
        results = core.predictions.classify(rows, top_k or settings_of(request).default_top_k, language)
        answer = ClassifyResponse.model_construct(model=core.model_ref, results=results)
        return FastJSON(answer, headers={"Content-Language": language})

    @router.post(
        "/attributes",
        name="attributes",
        response_model=AttributesResponse,
        responses=ERRORS,
        openapi_extra=body,
        summary="Attributes of each product photo",
    )
    async def attributes(
        request: Request,
        top_k: int | None = TOP_K,
        lang: str | None = LANG,
        accept_language: str | None = ACCEPT_LANGUAGE,
    ) -> Response:
        """Colour, gender, season, usage (every non-category head), each with its top-k, and the product's colour
        palette (up to 5 colours of its own pixels, named in the colour head's words), per image."""
        core = await core_of(request)
        language = core.labels.choose(lang, accept_language)
        rows = await unless_disconnected(request, core.infer(await images_of(request), "attributes"))
        results = core.predictions.attributes(rows, top_k or settings_of(request).default_top_k, language)
        answer = AttributesResponse.model_construct(model=core.model_ref, results=results)
        return FastJSON(answer, headers={"Content-Language": language})

    return router

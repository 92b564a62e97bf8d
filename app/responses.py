"""Response shapes (pydantic models) for the answers and the OpenAPI document, and the documented errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

Label = Annotated[str, Field(examples=["Tshirts"])]
Score = Annotated[float, Field(ge=0, le=1, examples=[0.93])]


class Scored(TypedDict):
    # A TypedDict, not a model: answers hold many of them (top-k lists), and a dict costs a fraction of a model.
    label: Label
    score: Score


class Category(BaseModel):
    """The finest category level the model has (the article type for the default model), with the coarser ones."""

    label: Label
    score: Score
    master: Scored | None = Field(None, description="Absent when the model has no master-category head.")
    sub: Scored | None = Field(None, description="Absent when the model has no sub-category head.")


class Attribute(BaseModel):
    label: Label
    score: Score
    top_k: list[Scored]


class ErrorBody(BaseModel):
    code: str = Field(examples=["invalid_image"])
    message: str = Field(examples=["image data is corrupt or truncated"])


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelRef(BaseModel):
    name: str = Field(examples=["product-classifier"])
    version: int = Field(examples=[1])
    provider: str = Field(examples=["cpu"])
    precision: str = Field(examples=["int8"])


class ClassifyResult(BaseModel):
    index: int
    status: Literal["ok", "error"]
    category: Category | None = None
    top_k: list[Scored] | None = None
    error: ErrorBody | None = None


class Swatch(BaseModel):
    """One colour of the product's own pixels (background left out), named in the colour head's words."""

    hex: str = Field(examples=["#1f2a44"])
    name: str = Field(examples=["Navy Blue"])
    share: float = Field(ge=0, le=1, description="Its share of the product's pixels.", examples=[0.62])


class AttributesResult(BaseModel):
    index: int
    status: Literal["ok", "error"]
    attributes: dict[str, Attribute | list[Swatch]] | None = Field(
        None,
        examples=[
            {
                "colour": {"label": "Navy Blue", "score": 0.71, "top_k": [{"label": "Navy Blue", "score": 0.71}]},
                "gender": {"label": "Men", "score": 0.95, "top_k": [{"label": "Men", "score": 0.95}]},
            }
        ],
    )
    error: ErrorBody | None = None


class Explanation(BaseModel):
    head: str = Field(description="The head's key.", examples=["article"])
    label: str = Field(examples=["Tshirts"])
    score: float = Field(ge=0, le=1, examples=[0.93])
    grid: list[list[float]] = Field(
        description="Heat of the evidence for the label over the model's square input, rows by columns, 0 to 1."
    )
    png: str = Field(description="Base64 PNG: the heat drawn over the photo as fitted on its white pad.")


class ExplainResult(BaseModel):
    index: int
    status: Literal["ok", "error"]
    explanation: Explanation | None = None
    error: ErrorBody | None = None


class ExplainResponse(BaseModel):
    model: ModelRef
    results: list[ExplainResult]


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[ClassifyResult]


class AttributesResponse(BaseModel):
    model: ModelRef
    results: list[AttributesResult]


def images_body(max_images: int) -> dict[str, Any]:
    """The request body of the image endpoints, with the configured image limit."""
    images = {"type": "array", "minItems": 1, "maxItems": max_images}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {**images, "items": {"type": "string", "format": "binary"}}},
                    "required": ["images"],
                },
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {**images, "items": {"type": "string", "format": "byte"}}},
                    "required": ["images"],
                },
                "example": {"images": ["/9j/4AAQSkZJRgABAQAAAQABAAD..."]},
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Malformed request (no images, too many images, bad multipart or JSON)"),
        (401, "No valid API key (only when VITRINE_API_KEYS is set)"),
        (404, "The served model has no head for this endpoint (/classify for a model without category heads)"),
        (408, "The request body did not arrive within VITRINE_BODY_TIMEOUT_S (the connection is closed)"),
        (413, "Body too large"),
        (415, "Unsupported content type"),
        (422, "Invalid query parameter"),
        (500, "Internal error"),
        (503, "Not ready or overloaded (see Retry-After)"),
        (504, "Deadline exceeded"),
        (499, "The client closed the connection (nobody reads this answer; it shows in the metrics)"),
    )
}

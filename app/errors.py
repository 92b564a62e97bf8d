"""Error types carrying their HTTP status and a stable machine-readable code."""

from __future__ import annotations


class VitrineError(Exception):
    """Base error: `status` is the HTTP status, `code` the stable code clients match on."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str = "internal error", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class ImageError(VitrineError):
    """An image that cannot be used; reported per item, not for the whole request."""

    status = 422
    code = "invalid_image"


class UnsupportedFormat(ImageError):
    code = "unsupported_format"


class ImageTooLarge(ImageError):
    status = 413
    code = "image_too_large"


class BadRequest(VitrineError):
    status = 400
    code = "bad_request"


class NoImages(BadRequest):
    code = "no_images"


class TooManyImages(BadRequest):
    code = "too_many_images"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class MalformedBody(BadRequest):
    code = "malformed_body"


class Overloaded(VitrineError):
    status = 503
    code = "overloaded"


class NotReady(VitrineError):
    status = 503
    code = "not_ready"


class NotAvailable(VitrineError):
    """The served model has no head for this endpoint (e.g. /classify for a model with attribute heads only)."""

    status = 404
    code = "not_available"


class BodyTimeout(VitrineError):
    """The request body did not arrive within `body_timeout_s` (a stalled or very slow upload)."""

    status = 408
    code = "body_timeout"


class DeadlineExceeded(VitrineError):
    status = 504
    code = "deadline_exceeded"


class ClientClosed(VitrineError):
    """The client disconnected before its answer was ready (nginx's 499); nobody reads this response."""

    status = 499
    code = "client_closed"


class InferenceFailed(VitrineError):
    status = 500
    code = "inference_failed"


class ModelLoadError(VitrineError):
    """The model version cannot be loaded; the process must not start."""

    code = "model_load_error"


class UnknownHead(BadRequest):
    """A `head` the served model does not have (the message lists those it has)."""

    code = "unknown_head"


class UnknownLabel(BadRequest):
    """A `label` that is not one of the head's labels."""

    code = "unknown_label"

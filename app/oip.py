"""Open Inference Protocol v2 (KServe, Triton): infer requests and responses, in JSON and with the binary
tensor data extension, for a model that takes encoded images and answers per-head probabilities.

The model's one input is `image`, a BYTES tensor of encoded images (JPEG, PNG, ... as for /classify):
base64 text in JSON, raw bytes in the binary extension (each element a little-endian uint32 length, then
its bytes). Its outputs are named by the heads' API keys, FP32 [batch, labels] probabilities in the
label order of the model metadata, plus `embedding` when the model has one.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.errors import BadRequest, ImageError, VitrineError
from app.schema import ModelMetadata

HEADER = "inference-header-content-length"
INPUT = "image"
EMBEDDING = "embedding"
PLATFORM = "onnxruntime_onnx"
LENGTH = struct.Struct("<I")


class InferError(BadRequest):
    """A v2 request that cannot be answered as sent (400, `{"error": ...}`)."""

    code = "invalid_infer_request"


class ModelNotFound(VitrineError):
    """No such model or version (404 in v2)."""

    status = 404
    code = "model_not_found"


@dataclass(frozen=True)
class Requested:
    """One output the caller asked for, and whether it wants it in the binary section."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A parsed v2 infer request: its id, its images in order, the outputs to return."""

    id: str | None
    images: list[bytes]
    outputs: list[Requested]


def version_number(value: object) -> int | None:
    """A version as a path or a parameter gives it ("2" or 2), or None; `int()` alone would take "²" or " 2"."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def output_names(metadata: ModelMetadata, embedding_width: int | None) -> list[str]:
    """The model's v2 outputs: one per head (by API key), then the embedding if it has one."""
    names = [h.key for h in metadata.heads]
    return [*names, EMBEDDING] if metadata.embedding_output and embedding_width else names


def model_metadata(metadata: ModelMetadata, versions: list[int], embedding_width: int | None) -> dict[str, Any]:
    """GET /v2/models/{name}: the input and outputs, with each head's labels (the order of its probabilities)."""
    outputs: list[dict[str, Any]] = [
        {"name": h.key, "datatype": "FP32", "shape": [-1, len(h.labels)], "parameters": {"labels": h.labels}}
        for h in metadata.heads
    ]
    if metadata.embedding_output and embedding_width:
        outputs.append({"name": EMBEDDING, "datatype": "FP32", "shape": [-1, embedding_width]})
    return {
        "name": metadata.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs,
    }


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request (a dict) and its binary section (empty without the extension)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InferError(f"Inference-Header-Content-Length {header_length!r} is not a number") from None
        if not 0 < length <= len(body):
            raise InferError(f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes")
        head, binary = body[:length], body[length:]
    else:
        head, binary = body, b""
    try:
        parsed = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InferError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise InferError("the request must be a JSON object")
    return parsed, binary


def parse_infer(body: bytes, header_length: str | None, outputs: list[str], *, max_images: int) -> InferRequest:
    """Read a v2 infer request; InferError (400) with the reason when it does not fit this model."""
    request, binary = split_body(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InferError(f"the model takes one input, {INPUT!r} (a BYTES tensor of encoded images)")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise InferError(f"unknown input {tensor.get('name')!r}: the model's input is {INPUT!r}")
    if tensor.get("datatype") != "BYTES":
        raise InferError(f"input {INPUT!r} is BYTES (encoded images), not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise InferError(f"input {INPUT!r} needs a shape such as [n] or [n, 1], got {shape!r}")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InferError(f"input {INPUT!r} has shape {shape}: one encoded image per row, [n] or [n, 1]")
    count = shape[0]
    if count == 0:
        raise InferError("the request holds no images")
    if count > max_images:
        raise InferError(f"{count} images in one request, more than the limit of {max_images}")
    parameters = tensor.get("parameters") or {}
    if "binary_data_size" in parameters:
        images = _binary_images(binary, parameters["binary_data_size"])
    elif "data" in tensor:
        if binary:
            raise InferError("a binary section was sent but no input declares binary_data_size")
        images = _json_images(tensor["data"])
    else:
        raise InferError(f"input {INPUT!r} has neither data nor binary_data_size")
    if len(images) != count:
        raise InferError(f"input {INPUT!r} has shape {shape} but holds {len(images)} images")
    return InferRequest(_request_id(request), images, _requested(request, outputs))


def _request_id(request: dict[str, Any]) -> str | None:
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InferError("id must be a string")
    return rid


def _binary_images(binary: bytes, size: Any) -> list[bytes]:
    """BYTES elements from the binary section: a little-endian uint32 length before each."""
    if not isinstance(size, int) or size != len(binary):
        raise InferError(f"binary_data_size {size!r} does not match the {len(binary)} bytes after the JSON header")
    images, offset = [], 0
    view = memoryview(binary)
    while offset < len(binary):
        if offset + LENGTH.size > len(binary):
            raise InferError("binary BYTES data ends inside an element's length")
        (length,) = LENGTH.unpack_from(view, offset)
        offset += LENGTH.size
        if offset + length > len(binary):
            raise InferError("binary BYTES data ends inside an element")
        images.append(bytes(view[offset : offset + length]))
        offset += length
    return images


def _json_images(data: Any) -> list[bytes]:
    """BYTES elements in JSON: base64 text (JSON strings cannot carry raw image bytes), nested or flat."""
    flat = _flatten(data)
    images = []
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InferError(f"image {index}: BYTES elements in JSON are base64 strings")
        try:
            images.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise InferError(f"image {index}: not valid base64 (send raw bytes with the binary extension)") from None
    return images


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _requested(request: dict[str, Any], names: list[str]) -> list[Requested]:
    """The outputs to return: those named (all by default), binary where asked for."""
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InferError("parameters must be an object")
    binary_default = bool(parameters.get("binary_data_output", False))
    asked = request.get("outputs")
    if asked is None:
        return [Requested(name, binary_default) for name in names]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise InferError("outputs must be a list of objects with a name")
    chosen = []
    for output in asked:
        name = output.get("name")
        if name not in names:
            raise InferError(f"unknown output {name!r}: the model's outputs are {names}")
        binary = (output.get("parameters") or {}).get("binary_data", binary_default)
        chosen.append(Requested(name, bool(binary)))
    return chosen


def image_failure(errors: list[tuple[int, ImageError]]) -> InferError:
    """One v2 error for a request with unusable images (v2 has no per-item errors): the first, and how many."""
    index, first = errors[0]
    more = f" (and {len(errors) - 1} more images)" if len(errors) > 1 else ""
    failure = InferError(f"image {index}: {first.message}{more}")
    failure.status = first.status  # 413 for an image over the limit, else 422, as on /classify
    return failure


def infer_response(
    metadata: ModelMetadata, request: InferRequest, tensors: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the length of its JSON header."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for wanted in request.outputs:
        values = np.ascontiguousarray(tensors[wanted.name], dtype=np.float32)
        entry: dict[str, Any] = {"name": wanted.name, "datatype": "FP32", "shape": list(values.shape)}
        if wanted.binary:
            raw = values.astype("<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = values.ravel()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": metadata.name, "model_version": str(metadata.version), "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)

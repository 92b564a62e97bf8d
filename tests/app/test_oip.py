"""The v2 protocol's tensors, read and written against tritonclient's own encoder and decoder."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from app import oip
from app.errors import ImageTooLarge, UnsupportedFormat
from app.schema import ModelMetadata, Preprocessing
from tests.tiny_model import HEADS

META = ModelMetadata(name="tiny", version=3, heads=HEADS, preprocessing=Preprocessing(size=32), files={})
NAMES = oip.output_names(META, 12)


def request(images: list[bytes], *, binary: bool, outputs: list[tuple[str, bool]] | None = None) -> tuple[bytes, int]:
    """A request body as tritonclient writes it, and its JSON header's length."""
    tensor = triton.InferInput(oip.INPUT, [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    wanted = [triton.InferRequestedOutput(name, binary_data=b) for name, b in outputs] if outputs else None
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=wanted, request_id="r1")
    return body, json_size if json_size is not None else len(body)


def test_json_and_binary_requests_carry_the_same_images(photos: list[bytes]) -> None:
    for binary in (False, True):
        body, length = request(photos[:3], binary=binary)
        header = str(length) if binary else None
        parsed = oip.parse_infer(body, header, NAMES, max_images=8)
        assert parsed.images == photos[:3]
        assert parsed.id == "r1"


def test_outputs_default_to_every_head_and_the_embedding_and_a_subset_can_be_asked_for(photos: list[bytes]) -> None:
    body, _ = request(photos[:1], binary=False)
    everything = oip.parse_infer(body, None, NAMES, max_images=8).outputs
    assert [o.name for o in everything] == [
        "article",
        "sub",
        "master",
        "colour",
        "gender",
        "season",
        "usage",
        "embedding",
    ]
    body, length = request(photos[:1], binary=True, outputs=[("colour", True), ("article", False)])
    chosen = oip.parse_infer(body, str(length), NAMES, max_images=8).outputs
    assert chosen == [oip.Requested("colour", True), oip.Requested("article", False)]


def test_responses_decode_in_tritonclient_as_float32_tensors(photos: list[bytes]) -> None:
    body, length = request(photos[:2], binary=True, outputs=[("colour", True), ("gender", False)])
    parsed = oip.parse_infer(body, str(length), NAMES, max_images=8)
    colour = np.array([[0.1, 0.2, 0.3, 0.1, 0.2, 0.1], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]], np.float32)
    gender = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    content, header = oip.infer_response(META, parsed, {"colour": colour, "gender": gender})
    assert header is not None and header < len(content)
    result = triton.InferenceServerClient.parse_response_body(content, header_length=header)
    np.testing.assert_array_equal(result.as_numpy("colour"), colour)
    np.testing.assert_allclose(result.as_numpy("gender"), gender)
    assert result.get_response()["model_version"] == "3"
    assert result.get_response()["id"] == "r1"


def test_a_json_only_response_has_no_header() -> None:
    parsed = oip.InferRequest(None, [b"x"], [oip.Requested("gender", False)])
    content, header = oip.infer_response(META, parsed, {"gender": np.array([[0.2, 0.3, 0.5]], np.float32)})
    assert header is None
    assert orjson.loads(content)["outputs"] == [
        {"name": "gender", "datatype": "FP32", "shape": [1, 3], "data": pytest.approx([0.2, 0.3, 0.5])}
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "one input"),
        (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}', "unknown input 'x'"),
        (b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}', "is BYTES"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 2], "data": []}]}', "one encoded image"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [0], "data": []}]}', "no images"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [9], "data": []}]}', "limit of 8"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]}', "holds 1 images"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}', "not valid base64"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [7]}]}', "base64 strings"),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}],'
            b' "outputs": [{"name": "price"}]}',
            "unknown output 'price'",
        ),
    ],
)
def test_requests_that_do_not_fit_the_model_are_refused_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(oip.InferError, match=message) as caught:
        oip.parse_infer(body, None, NAMES, max_images=8)
    assert caught.value.status == 400


def test_binary_sections_that_do_not_add_up_are_refused(photos: list[bytes]) -> None:
    body, length = request(photos[:2], binary=True)
    with pytest.raises(oip.InferError, match="binary_data_size"):
        oip.parse_infer(body[:-5], str(length), NAMES, max_images=8)
    with pytest.raises(oip.InferError, match="does not fit"):
        oip.parse_infer(body, str(len(body) + 1), NAMES, max_images=8)
    with pytest.raises(oip.InferError, match="not a number"):
        oip.parse_infer(body, "many", NAMES, max_images=8)


def test_unusable_images_fail_the_request_naming_the_first() -> None:
    error = oip.image_failure([(2, UnsupportedFormat("not a recognised image format")), (5, ImageTooLarge("big"))])
    assert error.message == "image 2: not a recognised image format (and 1 more images)"
    assert error.status == 422
    assert oip.image_failure([(0, ImageTooLarge("image is 9 bytes"))]).status == 413


def test_model_metadata_lists_each_head_with_its_labels() -> None:
    described = oip.model_metadata(META, [3], 12)
    assert described["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in described["outputs"]] == NAMES
    assert described["outputs"][3]["parameters"]["labels"] == HEADS[3].labels
    assert described["outputs"][-1] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 12]}

"""The Open Inference Protocol on a real server, spoken by clients nobody here wrote: tritonclient and kserve."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from tritonclient.utils import InferenceServerException

from app.settings import Settings
from tests.live import running


@pytest.fixture
def server(tiny_settings: Settings) -> Iterator[str]:
    with running(tiny_settings) as url:
        yield url


def native_scores(url: str, photos: list[bytes]) -> tuple[list[str], np.ndarray]:
    """The article head's labels and each photo's probabilities as /classify gives them (all labels)."""
    labels = httpx.get(f"{url}/models").json()["models"][0]["heads"][0]["labels"]
    files = [("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
    results = httpx.post(f"{url}/classify", files=files, params={"top_k": len(labels)}).json()["results"]
    scores = np.zeros((len(photos), len(labels)), np.float32)
    for i, result in enumerate(results):
        for entry in result["top_k"]:
            scores[i, labels.index(entry["label"])] = entry["score"]
    return labels, scores


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_and_reads_metadata(server: str, photos: list[bytes], binary: bool) -> None:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    metadata = client.get_model_metadata("tiny")
    assert metadata["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    images = photos[:4]
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    # JSON cannot carry raw bytes: base64 text there, raw bytes in the binary extension.
    data = images if binary else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("article", "embedding")]
    result = client.infer("tiny", [tensor], outputs=outputs, request_id="t1")
    article = result.as_numpy("article")
    assert article.dtype == np.float32 and article.shape == (4, 5)
    assert result.as_numpy("embedding").shape == (4, 12)
    assert result.as_numpy("colour") is None  # not asked for
    labels, scores = native_scores(server, images)
    assert [o["parameters"]["labels"] for o in metadata["outputs"][:1]] == [labels]
    np.testing.assert_allclose(article, scores, atol=1e-6)
    everything = client.infer("tiny", [tensor])  # no outputs named: every head and the embedding
    assert everything.as_numpy("usage").shape == (4, 3)


def test_tritonclient_sees_v2_errors(server: str) -> None:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="image 0: not a recognised image format"):
        client.infer("tiny", [tensor])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")


def test_the_kserve_rest_client_infers(server: str, photos: list[bytes]) -> None:
    async def run() -> tuple[bool, bool, dict[str, np.ndarray]]:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
        try:
            tensor = InferInput("image", [3], "BYTES")
            tensor.set_data_from_numpy(np.array(photos[:3], dtype=np.object_), binary_data=True)
            request = InferRequest(
                "tiny", [tensor], request_id="k1", request_outputs=[RequestedOutput("article"), RequestedOutput("sub")]
            )
            response = await client.infer(server, request, model_name="tiny")
            live = await client.is_server_live(server)
            ready = await client.is_model_ready(server, "tiny")
        finally:
            await client.close()
        return live, ready, {o.name: o.as_numpy() for o in response.outputs}

    live, ready, outputs = asyncio.run(run())
    assert live and ready
    assert list(outputs) == ["article", "sub"]
    _, scores = native_scores(server, photos[:3])
    np.testing.assert_allclose(outputs["article"], scores, atol=1e-6)

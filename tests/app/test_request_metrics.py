"""Requests are counted per endpoint, the label being the name of the table's route that serves the path."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.testclient import TestClient
from starlette.routing import Route

from app.request_metrics import EndpointLabels


def test_each_endpoint_keeps_its_label_and_everything_else_is_other(client: TestClient, photos: list[bytes]) -> None:
    client.post("/classify", files=[("images", ("a.jpg", photos[0], "image/jpeg"))])
    client.post("/attributes", content=photos[0], headers={"content-type": "image/jpeg"})
    client.get("/classify")  # 405: still the endpoint's
    for path in ("/models", "/metrics", "/health/live", "/health/ready", "/docs", "/openapi.json", "/nowhere"):
        client.get(path)
    text = client.get("/metrics").text
    counted = {
        line.split("{", 1)[1].split("}", 1)[0]
        for line in text.splitlines()
        if line.startswith("vitrine_requests_total{")
    }
    assert counted == {
        'endpoint="classify",status="200"',
        'endpoint="classify",status="405"',
        'endpoint="attributes",status="200"',
        'endpoint="models",status="200"',
        'endpoint="metrics",status="200"',
        'endpoint="live",status="200"',
        'endpoint="ready",status="200"',
        'endpoint="other",status="200"',
        'endpoint="other",status="404"',
    }


def test_a_new_route_gets_its_name_as_its_label_path_parameters_included() -> None:
    router = APIRouter()

    @router.post("/v2/models/{model}/infer", name="v2_infer")
    async def infer(model: str) -> dict[str, str]:
        return {"model": model}

    routes = [r for r in router.routes if isinstance(r, Route)]
    labels = EndpointLabels(routes)
    assert labels("/v2/models/tiny/infer") == "v2_infer"
    assert labels("/v2/models/tiny/infer/more") == "other"
    assert labels("/classify") == "other"

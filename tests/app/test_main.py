"""The app factory: every route of the table, the API docs, and readiness only once the lifespan has run."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def test_health_models_and_docs(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["warmed_batch_sizes"] == [1, 8]
    model = client.get("/models").json()["models"][0]
    assert model["provider"] == "cpu" and model["input"]["size"] == 32
    assert [h["key"] for h in model["heads"]] == ["article", "sub", "master", "colour", "gender", "season", "usage"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= body.keys()
    documented = schema["paths"]["/classify"]["post"]["responses"].keys()
    assert {"200", "400", "401", "404", "408", "413", "415", "422", "499", "500", "503", "504"} <= documented
    assert client.get("/docs").status_code == 200


def test_not_ready_before_start(tiny_settings: Settings) -> None:
    client = TestClient(create_app(tiny_settings))  # no `with`: the lifespan (load, warm-up) has not run
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert ready.headers["Retry-After"]
    assert client.post("/classify", content=b"x", headers={"content-type": "image/jpeg"}).status_code == 503

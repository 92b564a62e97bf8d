"""Triton's repository extension: versions loaded beside each other, one in service, v2 paths per version."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import oip
from app.main import create_app
from app.registry import UnknownVersion
from app.routes.repository import load_plan
from app.schema import Head, ModelMetadata
from app.settings import Settings
from tests.tiny_model import build_tiny_onnx, make_repository


@pytest.fixture
def two_versions(tiny_settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    root = tmp_path / "repo"
    make_repository(root, version=1)
    make_repository(root, version=2)
    build_tiny_onnx(root / "tiny" / "2" / "model.onnx", tiny_settings_heads(root), 32, seed=1)
    settings = tiny_settings.model_copy(update={"model_repository": root, "model_version": 1, "body_timeout_s": 0.1})
    with TestClient(create_app(settings)) as client:
        yield client


def tiny_settings_heads(root: Path) -> list[Head]:
    return ModelMetadata.read(root / "tiny" / "1").heads


def infer(client: TestClient, path: str, photo: bytes) -> dict[str, Any]:
    body = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(photo).decode()]}]
    }
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_version_loaded_beside_answers_its_v2_path_and_takes_the_native_api(
    two_versions: TestClient, photos: list[bytes]
) -> None:
    client = two_versions
    before = client.post("/classify", files={"images": ("p.jpg", photos[0], "image/jpeg")}).json()
    loaded = client.post("/v2/repository/models/tiny/load", json={"parameters": {"version": 2}}).json()
    assert loaded == {"name": "tiny", "serving": "2", "loaded": ["1", "2"]}
    after = client.post("/classify", files={"images": ("p.jpg", photos[0], "image/jpeg")}).json()
    assert (before["model"]["version"], after["model"]["version"]) == (1, 2)
    assert before["results"][0]["top_k"] != after["results"][0]["top_k"]  # other weights, other scores
    assert infer(client, "/v2/models/tiny/versions/1/infer", photos[0])["model_version"] == "1"
    assert infer(client, "/v2/models/tiny/infer", photos[0])["model_version"] == "2"
    assert client.get("/v2/models/tiny").json()["versions"] == ["1", "2"]
    models = client.get("/models").json()["models"]
    assert [(m["version"], m["in_service"]) for m in models] == [(2, True), (1, False)]
    assert client.post("/v2/repository/models/tiny/unload", json={"parameters": {"version": 1}}).status_code == 200
    gone = client.post("/v2/models/tiny/versions/1/infer", json={})
    assert gone.status_code == 404 and "no version '1' loaded" in gone.json()["error"]


def test_repository_requests_for_another_model_or_without_a_version_are_refused(two_versions: TestClient) -> None:
    client = two_versions
    assert client.post("/v2/repository/models/other/load").status_code == 404
    refused = client.post("/v2/repository/models/tiny/unload", json={"parameters": {"unload_dependents": False}})
    assert refused.status_code == 400 and "name the version" in refused.json()["error"]
    assert client.post("/v2/repository/models/tiny/unload", json={"parameters": {"version": 1}}).status_code == 409
    assert client.post("/v2/repository/models/tiny/load", content=b"{").status_code == 400
    index = client.post("/v2/repository/index").json()
    assert [(e["version"], e["state"], e["serving"]) for e in index] == [
        ("1", "READY", True),
        ("2", "UNAVAILABLE", False),
    ]


def test_extra_versions_load_at_start_beside_the_one_in_service(
    two_versions: TestClient, tiny_settings: Settings, photos: list[bytes]
) -> None:
    root = two_versions.app.state.settings.model_repository  # type: ignore[attr-defined]
    settings = tiny_settings.model_copy(update={"model_repository": root, "model_version": 1})
    with TestClient(create_app(settings.model_copy(update={"extra_model_versions": "2"}))) as client:
        models = client.get("/models").json()["models"]
        assert [(m["version"], m["in_service"]) for m in models] == [(1, True), (2, False)]
        assert infer(client, "/v2/models/tiny/versions/2/infer", photos[0])["model_version"] == "2"
    unknown = create_app(settings.model_copy(update={"extra_model_versions": "9"}))
    with pytest.raises(UnknownVersion, match="no version 9"), TestClient(unknown):
        pass


def test_load_plans_follow_triton_version_policies() -> None:
    on_disk = [1, 2, 3]
    assert load_plan({}, on_disk, 1) == ([3], 3, True)  # Triton's default policy: the latest version
    assert load_plan({"version": "2"}, on_disk, 1) == ([2], 2, False)
    policy = {"version_policy": {"specific": {"versions": [1, 2]}}}
    assert load_plan({"config": json.dumps(policy)}, on_disk, 1) == ([1, 2], 2, True)
    assert load_plan({"config": json.dumps({"version_policy": {"all": {}}})}, on_disk, 1) == ([1, 2, 3], 3, True)
    latest = {"version_policy": {"latest": {"num_versions": 2}}}
    assert load_plan({"config": json.dumps(latest)}, on_disk, 1) == ([2, 3], 3, True)
    newest = json.dumps({"version_policy": {"newest": {}}})
    for bad in ({"version": True}, {"version": "²"}, {"config": "{"}, {"config": newest}):
        with pytest.raises(oip.InferError):
            load_plan(bad, on_disk, 1)

"""Model versions switched live on a real server: no request fails, and the new version answers after."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import httpx
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from app.schema import Head, ModelMetadata
from app.settings import Settings
from tests.live import metric, running
from tests.tiny_model import build_tiny_onnx, make_repository


def repository(root: Path) -> Path:
    """Versions 1 and 2 of `tiny` (different weights), and a version 3 whose ONNX file is broken."""
    make_repository(root, version=1)
    make_repository(root, version=2)
    build_tiny_onnx(root / "tiny" / "2" / "model.onnx", _heads(root), 32, seed=1)
    make_repository(root, version=3)
    (root / "tiny" / "3" / "model.onnx").write_bytes(b"not an onnx model")
    return root


def _heads(root: Path) -> list[Head]:
    return ModelMetadata.read(root / "tiny" / "1").heads


def test_switching_versions_under_load_fails_no_request(
    tiny_settings: Settings, tmp_path: Path, photos: list[bytes]
) -> None:
    settings = tiny_settings.model_copy(
        update={"model_repository": repository(tmp_path / "repo"), "model_version": 1, "body_timeout_s": 1.0}
    )
    statuses: Counter[int] = Counter()
    versions: list[tuple[bool, int]] = []  # (sent after the switch returned, version that answered)
    stop, switched = threading.Event(), threading.Event()

    def client(url: str, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = worker
            while not stop.is_set():
                files = {"images": ("p.jpg", photos[i % len(photos)], "image/jpeg")}
                after_switch = switched.is_set()
                answer = http.post("/classify", files=files)
                statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    versions.append((after_switch, answer.json()["model"]["version"]))
                i += 1

    with running(settings) as url:
        workers = [threading.Thread(target=client, args=(url, w)) for w in range(4)]
        for worker in workers:
            worker.start()
        triton_client = triton.InferenceServerClient(url=url.removeprefix("http://"))
        try:
            while len(versions) < 20:  # version 1 answering under load
                stop.wait(0.05)
            # Triton's way: exactly version 2 loaded, which then answers; version 1 is retired.
            triton_client.load_model("tiny", config=json.dumps({"version_policy": {"specific": {"versions": [2]}}}))
            switched.set()
            count = len(versions)
            # A broken version and an unknown one are refused; version 2 keeps answering.
            broken = httpx.post(f"{url}/v2/repository/models/tiny/load", json={"parameters": {"version": 3}})
            unknown = httpx.post(f"{url}/v2/repository/models/tiny/load", json={"parameters": {"version": 9}})
            in_service = httpx.post(f"{url}/v2/repository/models/tiny/unload", json={"parameters": {"version": 2}})
            while len(versions) < count + 40:
                stop.wait(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        index = {e["version"]: e for e in triton_client.get_model_repository_index()}
        models = httpx.get(f"{url}/models").json()["models"]
        text = httpx.get(f"{url}/metrics").text
        try:
            triton_client.unload_model("tiny")  # Triton's unload names no version: refused, nothing stops
        except InferenceServerException as error:
            unload_error = str(error)
        after = httpx.post(f"{url}/classify", files={"images": ("p.jpg", photos[0], "image/jpeg")}).json()

    assert set(statuses) == {200}, statuses
    assert versions[0] == (False, 1) and {v for later, v in versions if later} == {2}
    assert broken.status_code == 400 and "onnxruntime cannot load it" in broken.json()["error"]
    assert unknown.status_code == 404 and "no version 9" in unknown.json()["error"]
    assert in_service.status_code == 409
    assert "name the version to unload" in unload_error
    assert after["model"]["version"] == 2
    assert [(m["version"], m["in_service"]) for m in models] == [(2, True)]
    assert index["2"]["state"] == "READY" and index["2"]["serving"]
    assert index["1"]["state"] == "UNAVAILABLE" and index["3"]["state"] == "UNAVAILABLE"
    assert "onnxruntime cannot load it" in index["3"]["reason"]
    assert metric(text, 'vitrine_version_images_total{version="1"}') >= 20
    assert metric(text, 'vitrine_version_images_total{version="2"}') >= 40
    assert 'version="2"' in text.split("vitrine_model_info", 1)[1].splitlines()[2]

"""Shared fixtures: real catalogue photos, a tiny real ONNX model repository, settings and a live app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.tiny_model import make_repository

DATA = Path(__file__).parent / "data"
CATALOGUE = DATA / "catalogue"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    """The committed real catalogue JPEGs (60x80), in id order."""
    return [p.read_bytes() for p in sorted(CATALOGUE.glob("*.jpg"))]


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    """A model repository with one tiny model (`tiny`, version 1)."""
    return make_repository(tmp_path / "models")


@pytest.fixture
def tiny_settings(tiny_repo: Path) -> Settings:
    """Settings serving the tiny model on the CPU with small, test-friendly limits."""
    return Settings(
        model_repository=tiny_repo,
        model_name="tiny",
        providers="cpu",
        intra_op_threads=1,
        max_batch_size=8,
        max_batch_delay_ms=20,
        max_images_per_request=16,
        max_request_bytes=2_000_000,
        max_image_bytes=500_000,
        max_image_pixels=4_000_000,
    )


@pytest.fixture
def client(tiny_settings: Settings) -> Iterator[TestClient]:
    """A started app (lifespan run) over the tiny model."""
    with TestClient(create_app(tiny_settings)) as test_client:
        yield test_client

"""The route table: every group built for the settings, route names (the metrics labels) and ops paths."""

from __future__ import annotations

from app.routes import TABLE, build
from app.settings import Settings


def test_the_labels_come_from_the_table(tiny_settings: Settings) -> None:
    built = build(tiny_settings)
    assert len(built.routers) == len(TABLE)
    assert [r.name for r in built.routes()] == ["classify", "attributes", "live", "ready", "models", "metrics"]
    assert built.ops_paths == {"/health/live", "/health/ready", "/metrics"}

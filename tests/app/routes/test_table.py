"""The route table: every group built for the settings, route names (the metrics labels) and ops paths."""

from __future__ import annotations

from app.routes import TABLE, build
from app.settings import Settings


def test_the_labels_come_from_the_table(tiny_settings: Settings) -> None:
    built = build(tiny_settings)
    assert len(built.routers) == len(TABLE)
    native = ["classify", "attributes", "explain", "live", "ready", "models", "metrics"]
    v2 = ["v2_server", "v2_live", "v2_ready", *["v2_model"] * 2, *["v2_model_ready"] * 2, *["v2_infer"] * 2]
    repository = ["v2_repository_index", "v2_repository_load", "v2_repository_unload"]
    assert [r.name for r in built.routes()] == [*native, *v2, *repository]
    v2_ops = {"/v2", "/v2/health/live", "/v2/health/ready"}
    assert built.ops_paths == {"/health/live", "/health/ready", "/metrics", *v2_ops}

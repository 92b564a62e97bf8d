"""deploy/k8s/kserve: the InferenceService is built field by field into kserve's own V1beta1InferenceService."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kserve
import kubernetes.client
import pytest
import yaml

from app.settings import Settings

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "kserve" / "inferenceservice.yaml"
PRIMITIVES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool, "float": (int, float)}


class SchemaError(ValueError):
    """A field the model does not have, or a value of the wrong type, with where it is."""


def build(value: Any, kind: str, where: str = "") -> Any:
    """`value` (parsed YAML) as an instance of the OpenAPI type `kind`, refusing unknown fields and wrong types."""
    if match := re.fullmatch(r"[Ll]ist\[(.+)\]", kind):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: a list expected")
        return [build(v, match.group(1), f"{where}[{i}]") for i, v in enumerate(value)]
    if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", kind):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: a mapping expected")
        inner = match.group(1) or match.group(2)
        return {k: build(v, inner, f"{where}.{k}") for k, v in value.items()}
    if kind in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[kind]) or (kind == "int" and isinstance(value, bool)):
            raise SchemaError(f"{where}: {kind} expected, got {value!r}")
        return value
    if kind == "object":  # int-or-string fields such as a probe's port, quantities
        return value
    model = getattr(kserve, kind, None) or getattr(kubernetes.client, kind)
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: an object ({kind}) expected")
    names = {key: attr for attr, key in model.attribute_map.items()}
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise SchemaError(f"{where or kind}: {kind} has no field {unknown[0]!r}")
    fields = {names[k]: build(v, model.openapi_types[names[k]], f"{where}.{k}") for k, v in value.items()}
    return model(**fields)  # the generated model's own checks (required fields, enums)


def manifest() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return document


def test_the_inference_service_fits_kserves_model() -> None:
    service = build(manifest(), "V1beta1InferenceService")
    assert isinstance(service, kserve.V1beta1InferenceService)
    assert (service.api_version, service.kind) == (f"{kserve.constants.KSERVE_GROUP}/v1beta1", "InferenceService")
    container = service.spec.predictor.containers[0]
    assert container.name == "kserve-container"  # the name KServe gives its predictor container
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.ports[0].container_port == 8000


def test_its_environment_is_valid_settings() -> None:
    container = manifest()["spec"]["predictor"]["containers"][0]
    values = {e["name"].removeprefix("VITRINE_").lower(): e["value"] for e in container["env"]}
    settings = Settings.model_validate(values)
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.shutdown_grace_s < manifest()["spec"]["predictor"]["terminationGracePeriodSeconds"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "predictor", "minReplica"), 2, "no field 'minReplica'"),
        (("spec", "predictor", "minReplicas"), "two", "int expected"),
        (("spec", "predictor", "containers", 0, "readinessProbe", "httpGet", "paht"), "/", "no field 'paht'"),
    ],
)
def test_a_typo_or_a_wrong_type_is_refused(path: tuple[Any, ...], value: Any, message: str) -> None:
    broken = copy.deepcopy(manifest())
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SchemaError, match=message):
        build(broken, "V1beta1InferenceService")

"""Triton's model repository extension under /v2/repository: which versions are loaded, which one serves."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request

from app import oip
from app.errors import ModelLoadError, NotReady
from app.registry import Registry
from app.routes.v2 import V2_ERRORS, request_body
from app.settings import Settings


def registry_of(request: Request) -> Registry:
    """The app's registry once the first version is loaded; NotReady before."""
    registry: Registry | None = request.app.state.registry
    if registry is None:
        raise NotReady("the model is not loaded yet", headers={"Retry-After": "1"})
    return registry


async def parameters_of(request: Request, timeout_s: float) -> dict[str, Any]:
    """The request's `parameters` object (an empty body has none)."""
    body = await request_body(request, timeout_s)
    if not body.strip():
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise oip.InferError(f"the request is not valid JSON ({exc})") from None
    parameters = parsed.get("parameters", {}) if isinstance(parsed, dict) else None
    if not isinstance(parameters, dict):
        raise oip.InferError("the request must be a JSON object whose parameters are an object")
    return parameters


def load_plan(parameters: dict[str, Any], on_disk: list[int], serving: int) -> tuple[list[int], int, bool]:
    """(versions to have loaded, the one to serve, whether the others go): Vitrine's `version` parameter loads
    one beside the others and serves it; Triton's `config` version_policy (specific, latest, all) makes
    exactly those loaded and serves the highest; neither is Triton's default, the latest version alone."""
    if "version" in parameters:
        version = oip.version_number(parameters["version"])
        if version is None:
            raise oip.InferError(f"parameters.version must be a version number, not {parameters['version']!r}")
        return [version], version, False
    policy: Any = {"latest": {"num_versions": 1}}
    if "config" in parameters:
        try:
            config = orjson.loads(parameters["config"])
        except (orjson.JSONDecodeError, TypeError):
            raise oip.InferError("parameters.config must be a model configuration in JSON text") from None
        policy = config.get("version_policy", policy) if isinstance(config, dict) else None
    wanted = _policy_versions(policy, on_disk)
    if not wanted:
        raise oip.InferError(f"the version policy {policy!r} names no version (on disk: {on_disk})")
    return wanted, max(wanted), True


def _policy_versions(policy: Any, on_disk: list[int]) -> list[int]:
    if isinstance(policy, dict) and len(policy) == 1:
        kind, value = next(iter(policy.items()))
        if kind == "all":
            return on_disk
        if kind == "latest" and isinstance(value, dict) and isinstance(value.get("num_versions", 1), int):
            return on_disk[-value.get("num_versions", 1) :]
        if kind == "specific" and isinstance(value, dict) and isinstance(value.get("versions"), list):
            versions = value["versions"]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
                return sorted(set(versions))
    raise oip.InferError('version_policy is one of {"all": {}}, {"latest": {"num_versions": n}}, {"specific": ...}')


def routes(settings: Settings) -> APIRouter:
    """Index, load (put a version in service without dropping a request) and unload."""
    router = APIRouter(prefix="/v2/repository", tags=["Open Inference Protocol v2"], responses=V2_ERRORS)

    def named(registry: Registry, name: str) -> None:
        if name != registry.name:
            raise oip.ModelNotFound(f"unknown model {name!r}: this server serves {registry.name!r}")

    @router.post("/index", name="v2_repository_index", summary="Every version on disk and its state")
    async def index(request: Request) -> list[dict[str, Any]]:
        return registry_of(request).index()

    @router.post("/models/{name}/load", name="v2_repository_load", summary="Load versions, put one in service")
    async def load(request: Request, name: str) -> dict[str, Any]:
        registry = registry_of(request)
        named(registry, name)
        parameters = await parameters_of(request, settings.body_timeout_s)
        wanted, serve, exclusive = load_plan(parameters, registry.on_disk(), registry.serving)
        try:
            await registry.load(wanted, serve=serve, exclusive=exclusive)
        except ModelLoadError as error:  # the version's files, not the server: 400, the one in service stays
            raise oip.InferError(f"cannot load {name!r}: {error.message}") from error
        return {"name": name, "serving": str(registry.serving), "loaded": [str(v) for v in sorted(registry.cores)]}

    @router.post("/models/{name}/unload", name="v2_repository_unload", summary="Unload a version not in service")
    async def unload(request: Request, name: str) -> dict[str, Any]:
        registry = registry_of(request)
        named(registry, name)
        parameters = await parameters_of(request, settings.body_timeout_s)
        version = oip.version_number(parameters.get("version"))
        if version is None:
            raise oip.InferError(
                'name the version to unload: {"parameters": {"version": N}}; the version in service stays '
                "until another is loaded in its place"
            )
        await registry.unload(version)
        return {"name": name, "serving": str(registry.serving), "loaded": [str(v) for v in sorted(registry.cores)]}

    return router

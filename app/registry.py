"""The loaded versions of the served model, one core each; one of them answers the native API.

A version is loaded (opened, warmed up, batching) beside the one in service, then put in service by moving
one reference: requests that already hold the old core finish on it, new ones take the new core. A version
taken out of service is retired, not stopped at once: a request may hold it while its body still arrives
(at most `body_timeout_s`), so it is stopped that long after, finishing its queued work first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.core import Core
from app.errors import ModelLoadError, VitrineError
from app.metrics import Metrics
from app.repository import resolve, versions
from app.settings import Settings

log = logging.getLogger(__name__)

RETIRE_MARGIN_S = 1.0  # beyond the body timeout: the hop from reading the body to queueing its images


class VersionConflict(VitrineError):
    """A repository request that would leave no version in service."""

    status = 409
    code = "version_conflict"


class UnknownVersion(VitrineError):
    """A version that is not on disk, or not loaded."""

    status = 404
    code = "unknown_version"


class Registry:
    """Loaded versions of one model; `core` is the one in service."""

    def __init__(
        self, settings: Settings, metrics: Metrics, first: Core, publish: Callable[[Core], None] = lambda _: None
    ) -> None:
        """`publish` is told each core put in service (the app keeps it where its routes look)."""
        self.settings = settings
        self.metrics = metrics
        self.name = first.metadata.name
        self.cores: dict[int, Core] = {first.metadata.version: first}
        self.serving = first.metadata.version
        self._publish = publish
        self._publish_info(first)
        self._lock = asyncio.Lock()  # one load or unload at a time
        self._retiring: dict[Core, asyncio.Task[None]] = {}
        self._failures: dict[int, str] = {}
        publish(first)

    @property
    def core(self) -> Core:
        """The core in service."""
        return self.cores[self.serving]

    def get(self, version: int | None) -> Core:
        """The core of a loaded version (None: the one in service); UnknownVersion otherwise."""
        if version is None:
            return self.core
        core = self.cores.get(version)
        if core is None:
            raise UnknownVersion(f"model {self.name!r} has no version {version} loaded (loaded: {sorted(self.cores)})")
        return core

    def on_disk(self) -> list[int]:
        """The versions in the model repository."""
        return versions(self.settings.model_repository, self.name)

    async def load(self, wanted: list[int], *, serve: int, exclusive: bool = False) -> None:
        """Load the `wanted` versions not loaded yet, put `serve` (one of them) in service, and with `exclusive`
        retire every other version. An unknown or broken version raises (UnknownVersion, ModelLoadError) and
        changes nothing: the versions opened for this call are closed again, the one in service stays."""
        async with self._lock:
            available = self.on_disk()
            missing = [v for v in wanted if v not in available and v not in self.cores]
            if missing or serve not in wanted:
                raise UnknownVersion(
                    f"model {self.name!r} has no version {(missing or [serve])[0]} (available: {available})"
                )
            opened: list[int] = []
            try:
                for version in wanted:
                    if version not in self.cores:
                        self.cores[version] = await self._open(version)
                        opened.append(version)
            except BaseException:
                for version in opened:  # never in service: nobody holds them
                    await self.cores.pop(version).stop()
                raise
            if serve != self.serving:
                previous, self.serving = self.serving, serve
                self._publish(self.cores[serve])
                log.info("model %s: version %d in service (was %d)", self.name, serve, previous)
            self._publish_info(self.cores[serve])  # a core built here set the info to its own version
            if exclusive:
                for version in [v for v in self.cores if v not in wanted]:
                    self._retire(version)

    async def _open(self, version: int) -> Core:
        """A started core for `version`; a failure is remembered for the index and raised."""
        settings = self.settings.model_copy(update={"model_version": version})
        try:
            resolve(settings.model_repository, self.name, version)  # a clear error before opening anything
            core = await asyncio.to_thread(Core, settings, self.metrics)
            await core.start()
        except ModelLoadError as error:
            self._failures[version] = error.message
            log.warning("model %s: version %d not loaded: %s", self.name, version, error.message)
            raise
        self._failures.pop(version, None)
        return core

    async def unload(self, version: int) -> None:
        """Take a loaded version out (retired: stopped once requests holding it are done); not the one in service."""
        async with self._lock:
            if version == self.serving:
                raise VersionConflict(
                    f"version {version} of {self.name!r} is in service: load another version first, then unload it"
                )
            if version not in self.cores:
                raise UnknownVersion(f"model {self.name!r} has no version {version} loaded")
            self._retire(version)

    def _retire(self, version: int) -> None:
        """Take a version out of the registry now; stop it once no request can still be about to use it."""
        core = self.cores.pop(version)
        self._retiring[core] = asyncio.create_task(self._stop_later(core))

    async def _stop_later(self, core: Core) -> None:
        await asyncio.sleep(self.settings.body_timeout_s + RETIRE_MARGIN_S)
        del self._retiring[core]
        await core.stop()
        log.info("model %s: version %d unloaded", self.name, core.metadata.version)

    def _publish_info(self, core: Core) -> None:
        """vitrine_model_info and vitrine_model_failing follow the version in service (each core set them to
        its own when it was built)."""
        self.metrics.model_info.info({**core.model_ref.model_dump(), "version": str(core.metadata.version)})
        self.metrics.model_failing.set_function(lambda: float(core.model_failing))

    def index(self) -> list[dict[str, Any]]:
        """Every version on disk or loaded: READY while loaded and ready, else UNAVAILABLE with the reason."""
        entries = []
        for version in sorted(set(self.on_disk()) | set(self.cores)):
            core = self.cores.get(version)
            if core is not None and core.ready:
                state, reason = "READY", ""
            else:
                state = "UNAVAILABLE"
                reason = "not ready" if core is not None else self._failures.get(version, "unloaded")
            entries.append(
                {
                    "name": self.name,
                    "version": str(version),
                    "state": state,
                    "reason": reason,
                    "serving": version == self.serving,
                }
            )
        return entries

    async def stop(self) -> None:
        """Finish every loaded version's queued work and those being retired (shutdown)."""
        for core, task in list(self._retiring.items()):
            task.cancel()
            await core.stop()
        for core in self.cores.values():
            await core.stop()

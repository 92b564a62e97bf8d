"""Readiness: warmed up, batcher running, model answering; a failing model is tried again on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from app.batcher import Batcher
from app.metrics import Metrics
from app.runtime import Runtime

FAILING_RUNS = 3  # model runs failed in a row after which the replica reports not ready
PROBE_TIMEOUT_S = 10.0  # a check of a failing model that takes longer leaves it failing


class Health:
    """Whether the replica should get traffic (`ready`), and `vitrine_model_failing`."""

    def __init__(self, runtime: Runtime, batcher: Batcher[Any], metrics: Metrics) -> None:
        self.runtime = runtime
        self.batcher = batcher
        self.warmed_batch_sizes: list[int] = []  # set once every batch shape has run
        self._checking = asyncio.Lock()
        metrics.model_failing.set_function(lambda: float(self.model_failing))

    @property
    def ready(self) -> bool:
        """True once warmed up, while the batcher accepts work and while the model runs (not FAILING_RUNS
        failed runs in a row: see `check_model`)."""
        return bool(self.warmed_batch_sizes) and self.batcher.running and not self.model_failing

    @property
    def model_failing(self) -> bool:
        """True after FAILING_RUNS failed model runs in a row, until one succeeds."""
        return self.batcher.failed_runs_in_a_row >= FAILING_RUNS

    async def check_model(self) -> None:
        """Called while the model is failing: try it once (one white image, on a model thread) so that readiness can
        come back: a replica out of its load balancer gets no requests to show that it recovered. One check at a
        time; readiness probes pace them."""
        if self._checking.locked():
            return
        async with self._checking:
            blank = self.runtime.blank(1)
            await self.batcher.probe(lambda: self.runtime.run(blank), PROBE_TIMEOUT_S)

"""Prometheus metrics on a registry the app owns (one per process, never the global default)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
SCORE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
NO_CGROUP_LIMIT = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def resident_bytes(pids: Iterable[int]) -> float:
    """The summed resident memory of these processes, from /proc/<pid>/statm (a process gone counts 0)."""
    pages = 0
    for pid in pids:
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return float(pages * PAGE_BYTES)


def child_pids(parent: int, marker: bytes) -> tuple[int, ...]:
    """The processes whose parent is `parent` and whose command line contains `marker`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])  # the name may hold spaces
            if ppid == parent and marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return tuple(found)


def memory_limit_bytes() -> float:
    """The memory this process may use: its cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`: a
    container's) when one is set, at most the host's memory (`MemTotal`); NaN where neither can be read."""
    limits: list[float] = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < NO_CGROUP_LIMIT:
            limits.append(float(text))
        break  # the first file found is this host's cgroup version ("max": no limit)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(float(line.split()[1]) * 1024)
                break
    except OSError:
        pass
    return min(limits) if limits else float("nan")


class Metrics:
    """Every metric the service exports, per stage, with low-cardinality labels."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "vitrine_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.request_duration = Histogram(
            "vitrine_request_duration_seconds",
            "Time from request start to response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "vitrine_images",
            "Images by endpoint and outcome (ok or an error code).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.version_images = Counter(
            "vitrine_version_images",
            "Images answered by each model version: the one in service, or one named in a v2 path.",
            ["version"],
            registry=r,
        )
        self.batch_size = Histogram("vitrine_batch_size", "Images per model run.", buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "vitrine_queue_wait_seconds",
            "Time an image waited in the batch queue.",
            buckets=LATENCY_BUCKETS,  # up to the request deadline: an overloaded queue waits for seconds
            registry=r,
        )
        self.inference_duration = Histogram(
            "vitrine_inference_duration_seconds", "Model run time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.decode_duration = Histogram(
            "vitrine_decode_duration_seconds",
            "Decode and preprocessing time per image.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.prediction_score = Histogram(
            "vitrine_prediction_score",
            "Top-1 score (calibrated probability) of each answered image, per head: when it drifts down, the "
            "photos differ from the catalogue the model learnt (another studio, new kinds of product).",
            ["head"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vitrine_queue_depth",
            "Images waiting for a batch and, when decoding runs before the batcher, for decoding "
            "(VITRINE_MAX_QUEUE_SIZE caps it).",
            registry=r,
        )
        self.model_failing = Gauge(
            "vitrine_model_failing",
            "1 while the last model runs all failed (readiness is then false until a check run succeeds), else 0.",
            registry=r,
        )
        self.decode_processes_memory = Gauge(
            "vitrine_decode_processes_resident_memory_bytes",
            "Resident memory of the decode processes (VITRINE_DECODE_PROCESSES) and of the resource tracker "
            "process multiprocessing starts with them, summed; 0 without them. "
            "process_resident_memory_bytes is the service process's alone.",
            registry=r,
        )
        self.memory_limit = Gauge(
            "vitrine_memory_limit_bytes",
            "Memory the service may use: its cgroup's limit (the container's) if set, at most the host's memory.",
            registry=r,
        )
        self.memory_limit.set_function(memory_limit_bytes)
        self.model_info = Info("vitrine_model", "The model being served.", registry=r)

"""Service settings: one pydantic-settings class, every field from a `VITRINE_` environment variable."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "models"
# Default largest batches: one-thread workers ran as fast at 16 as at 32 and held less memory under load; one
# batch at a time takes 32 (docs/performance.md).
WORKER_BATCH = 16
PIPELINED_BATCH = 32
# On CUDA with this many usable CPUs or more, decode in processes by default (the CPUs less two): on many cores,
# decoding threads are bound by Python's GIL and processes serve more images (docs/performance.md).
AUTO_DECODE_PROCESSES_MIN_CPUS = 8


def auto_decode_processes(cuda: bool) -> int:
    """Decode processes when `VITRINE_DECODE_PROCESSES` is not set and images are not decoded on the model
    threads: on CUDA with at least AUTO_DECODE_PROCESSES_MIN_CPUS usable CPUs, the CPUs less two; else 0."""
    cpus = available_cpus()
    return cpus - 2 if cuda and cpus >= AUTO_DECODE_PROCESSES_MIN_CPUS else 0


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota if one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota() -> float | None:
    """CPU quota in cores from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Layout:
    """The decided decode and batching arrangement (`Settings.layout`)."""

    decode_on_model_threads: bool
    model_workers: int
    max_batch_size: int
    intra_op_threads: int  # per model worker: the intra-op threads shared out among them
    decode_processes: int = 0  # processes decoding before the batcher (0: threads, or the model threads)


class Settings(BaseSettings):
    """Everything the service can be told; each field is also `VITRINE_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    model_repository: Path = Field(DEFAULT_REPOSITORY, description="Folder of models: <name>/<version>/model.json.")
    model_name: str = Field("product-classifier", min_length=1, description="Model to serve.")
    model_version: int | None = Field(None, ge=1, description="Version to serve; default the highest one present.")
    extra_model_versions: str = Field(
        "",
        pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$",
        max_length=200,
        description="Other versions of the model loaded at start beside the one in service, comma-separated (e.g. "
        "`3,4`): v2 paths can name them, and the v2 repository extension puts one in service at once "
        "(docs/open-inference.md). Each holds its own session and threads.",
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto", description="Model file to load: auto picks int8 on CPU and fp16 on CUDA (fp32 if absent)."
    )
    providers: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Execution provider: auto uses CUDA when onnxruntime-gpu and a GPU are present."
    )
    intra_op_threads: int = Field(
        default_factory=available_cpus, ge=1, le=256, description="onnxruntime threads; default the usable CPUs."
    )
    model_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Batches run at once, each on its own thread; the intra-op threads are shared out among them. "
        "Default: one per intra-op thread when decoding on the model threads, else 1.",
    )
    decode_threads: int = Field(
        default_factory=available_cpus,
        ge=1,
        le=256,
        description="Threads decoding and resizing images before the batcher (unused when decoding on the model "
        "threads, the CPU default).",
    )
    decode_processes: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Decode in this many processes instead of threads (0: threads). For many-core hosts such as "
        f"a GPU's, where decoding threads are bound by Python's GIL. Default: on CUDA with at least "
        f"{AUTO_DECODE_PROCESSES_MIN_CPUS} usable CPUs, the CPUs less two; else 0.",
    )
    decode_on_model_threads: bool | None = Field(
        None,
        description="Decode each batch on the model thread that runs it (one-thread model workers that each decode "
        "and run whole batches) instead of on decode threads before the batcher. Default: on the CPU yes, "
        "on CUDA (or with decode processes) no.",
    )
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=f"Most images in one model run. Default: {WORKER_BATCH} when decoding on the model threads "
        f"(several batches run at once), else {PIPELINED_BATCH}.",
    )
    max_batch_delay_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="Longest an image waits for others to fill its batch."
    )
    max_queue_size: int = Field(
        512,
        ge=1,
        le=100_000,
        description="Images waiting beyond which requests get 503: waiting for a batch, and with decode threads "
        "or processes also waiting to be decoded.",
    )
    request_timeout_ms: float = Field(
        30_000.0,
        gt=0,
        le=600_000,
        description="Deadline for a request's images, from when its body has been read (decoding included); "
        "queued work past it gets 504.",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest a request's body may take to arrive; a slower upload gets 408 and its connection "
        "is closed, so stalled clients cannot hold bodies in memory without end.",
    )
    max_images_per_request: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Most images in one request (half the queue by default; at most max_queue_size).",
    )
    max_image_bytes: int = Field(10 * 2**20, ge=1024, description="Largest single image in bytes.")
    max_request_bytes: int = Field(64 * 2**20, ge=1024, description="Largest request body in bytes.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest width*height accepted, checked from the header before decoding."
    )
    default_top_k: int = Field(5, ge=1, le=100, description="top_k when the request does not say.")
    shutdown_grace_s: float = Field(
        30.0,
        ge=0.0,
        le=600.0,
        description="On SIGTERM, time to finish accepted requests before exiting (whole seconds; a fraction "
        "rounds up).",
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys; when set, requests need `Authorization: Bearer <key>`"
        " or `X-API-Key`. Empty: no authentication.",
    )
    protect_ops_endpoints: bool = Field(
        False, description="With API keys set, also require a key for /health/* and /metrics."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @model_validator(mode="after")
    def _one_place_to_decode(self) -> Settings:
        if self.decode_on_model_threads and self.decode_processes:
            raise ValueError("decode_on_model_threads and decode_processes exclude each other: pick one")
        return self

    @model_validator(mode="after")
    def _keys_when_asked_for(self) -> Settings:
        # A value such as " , " would otherwise turn authentication off without a word.
        if self.api_keys.get_secret_value().strip() and not self.key_list():
            raise ValueError("api_keys is set but holds no key: give comma-separated keys, or leave it empty")
        return self

    @model_validator(mode="after")
    def _requests_fit_the_queue(self) -> Settings:
        # A request larger than the queue could never be accepted: it would get 503 and Retry-After forever.
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) is larger than max_queue_size "
                f"({self.max_queue_size}): such a request could never be queued"
            )
        return self

    def layout(self, cuda: bool) -> Layout:
        """How the service decodes and batches, every automatic (None) field decided for CUDA or the CPU.

        The CPU runs one-thread model workers, one per intra-op thread, each decoding and running whole
        batches: no handoff, and no onnxruntime thread left waiting at a barrier for one that decoding
        preempted. CUDA keeps one batch in flight, fed by decode threads or processes.
        """
        processes = self.decode_processes
        if processes is None:
            processes = 0 if self.decode_on_model_threads else auto_decode_processes(cuda)
        decode_in_batch = self.decode_on_model_threads
        if decode_in_batch is None:
            decode_in_batch = not cuda and not processes
        workers = self.model_workers or (self.intra_op_threads if decode_in_batch else 1)
        return Layout(
            decode_on_model_threads=decode_in_batch,
            model_workers=workers,
            max_batch_size=self.max_batch_size or (WORKER_BATCH if decode_in_batch else PIPELINED_BATCH),
            intra_op_threads=max(1, self.intra_op_threads // workers),
            decode_processes=processes,
        )

    def extra_versions(self) -> list[int]:
        """`extra_model_versions` as numbers."""
        return sorted({int(v) for v in self.extra_model_versions.split(",") if v.strip()})

    def key_list(self) -> list[bytes]:
        """The configured API keys as bytes (empty when authentication is off)."""
        return [k.strip().encode() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

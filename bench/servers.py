"""Start a server under test as its own process group, time its cold start, and stop it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.images import ROOT

log = logging.getLogger(__name__)

BENTO_PYTHON = ROOT / ".venv-bento" / "bin" / "python"
MLSERVER_PYTHON = ROOT / ".venv-mlserver" / "bin" / "python"
MLSERVER_MODEL = "classifier"


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET (status 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def http_post(url: str, body: bytes, content_type: str, timeout_s: float = 60.0) -> tuple[int, bytes]:
    """Status and body of a POST."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@dataclass
class ServerSpec:
    """How to start one server and where it answers."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    classify_path: str = "/classify"
    metrics_path: str | None = None
    given_base: str | None = None  # a service that is already running elsewhere (`--url`)
    body: str = "multipart"  # how images are sent: multipart parts, or "v2" (MLServer's Open Inference JSON)

    @property
    def base(self) -> str:
        """http://127.0.0.1:<port>, or the given base URL."""
        return self.given_base or f"http://127.0.0.1:{self.port}"


@dataclass
class RunningServer:
    """A started server: its process, log file and cold start (process start to ready)."""

    spec: ServerSpec
    process: subprocess.Popen[bytes] | None
    cold_start_s: float | None
    log_path: Path | None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        """The server's root pid (None for a server given by URL)."""
        return self.process.pid if self.process is not None else None

    @property
    def url(self) -> str:
        """The classify endpoint."""
        return self.spec.base + self.spec.classify_path


def start(spec: ServerSpec, logs: Path, *, timeout_s: float = 180.0) -> RunningServer:
    """Start a server in its own session and wait for its readiness endpoint to answer 200."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{spec.name}-{spec.port}.log"
    env = {**os.environ, **spec.env}
    with log_path.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            spec.command,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ready_url = spec.base + spec.ready_path
    while True:
        status, _ = http_get(ready_url, timeout_s=1.0)
        if status == 200:
            cold = time.monotonic() - started
            log.info("%s ready in %.2fs (pid %d)", spec.name, cold, process.pid)
            return RunningServer(spec, process, cold, log_path)
        if process.poll() is not None:
            raise RuntimeError(
                f"{spec.name} exited with {process.returncode} before ready; see {log_path}:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        if time.monotonic() - started > timeout_s:
            stop(RunningServer(spec, process, None, log_path))
            raise RuntimeError(f"{spec.name} not ready within {timeout_s:.0f}s; see {log_path}")
        time.sleep(0.02)


def stop(server: RunningServer, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group (which this module created), then SIGKILL it if it lingers."""
    process = server.process
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def vitrine_spec(port: int, env: dict[str, str]) -> ServerSpec:
    """The service itself, as `vitrine serve` runs it."""
    return ServerSpec(
        "vitrine",
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        port,
        "/health/ready",
        metrics_path="/metrics",
    )


def naive_spec(port: int, env: dict[str, str]) -> ServerSpec:
    """The naive FastAPI peer: one model run per request."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "bench.peers.naive:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return ServerSpec("naive", command, env, port, "/health/ready")


def bento_spec(port: int, env: dict[str, str], python: Path = BENTO_PYTHON) -> ServerSpec:
    """The BentoML peer with adaptive batching, from its own virtual environment."""
    bentoml = python.parent / "bentoml"
    command = [
        str(bentoml),
        "serve",
        "bench.peers.bento_service:Classifier",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--working-dir",
        str(ROOT),
    ]
    env = {"BENTOML_DO_NOT_TRACK": "True", "PYTHONPATH": str(ROOT), **env}
    return ServerSpec("bentoml", command, env, port, "/readyz")


def mlserver_spec(
    port: int,
    env: dict[str, str],
    folder: Path,
    *,
    max_batch_size: int,
    max_batch_time_ms: float,
    parallel_workers: int,
    python: Path = MLSERVER_PYTHON,
) -> ServerSpec:
    """The MLServer peer with adaptive batching, from its own virtual environment.

    MLServer reads its settings from files: `folder` gets settings.json (ports; `parallel_workers` 0 runs
    inference in the server process, N in N worker processes) and model-settings.json (the runtime, the
    model file, the batching settings: `max_batch_size` counts requests, not images).
    """
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    model = {
        "name": MLSERVER_MODEL,
        "implementation": "bench.peers.mlserver_runtime.Classifier",
        "parameters": {"uri": str(Path(env["BENCH_MODEL"]).resolve())},
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_ms / 1000,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "model-settings.json").write_text(json.dumps(model, indent=2))
    command = [str(python.parent / "mlserver"), "start", str(folder)]
    env = {"PYTHONPATH": str(ROOT), **env}
    return ServerSpec(
        "mlserver",
        command,
        env,
        port,
        f"/v2/models/{MLSERVER_MODEL}/ready",
        classify_path=f"/v2/models/{MLSERVER_MODEL}/infer",
        body="v2",
    )

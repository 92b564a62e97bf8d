"""One benchmark run: ceilings, then each server under each profile, with disturbance checks and retries."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import orjson

from app.settings import auto_decode_processes
from bench import images as imgs
from bench import report, servers, stacks
from bench.loadgen import LoadResult, Wrk, hey_command, open_loop_connections, parse_hey_csv, parse_wrk, run_process
from bench.procstat import CLK_TCK, CpuShare, PhaseMonitor, thread_jiffies, vm_hwm_kb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """A load shape: images per request, concurrent connections, body kind, and for open loops the load."""

    name: str
    images_per_request: int
    connections: int
    raw: bool = False
    load_fraction: float | None = None  # open loop: share of the closed-loop B capacity


PROFILES = {
    "A": Profile("A", 16, 4),
    "B": Profile("B", 1, 32),
    "B-raw": Profile("B-raw", 1, 32, raw=True),
    "C50": Profile("C50", 1, 0, load_fraction=0.5),
    "C90": Profile("C90", 1, 0, load_fraction=0.9),
    # Not in the default run (DEFAULT_PROFILES): where between C50 and C90 the open loop stops keeping up.
    "C70": Profile("C70", 1, 0, load_fraction=0.7),
    "C80": Profile("C80", 1, 0, load_fraction=0.8),
}
DEFAULT_PROFILES = ("A", "B", "B-raw", "C50", "C90")
PEER_PROFILES = ("A", "B")


@dataclass
class Options:
    """Everything a run is told (see `bench.cli` for each option's meaning)."""

    results: Path
    name: str = "bench"
    url: str | None = None
    service_pid: int | None = None
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    peers: tuple[str, ...] = ("naive", "bentoml", "mlserver")
    duration_s: float = 15.0
    warmup_s: float = 3.0
    ceiling_s: float = 8.0
    n_images: int = 256
    threads: int = 2
    decode_threads: int = 2
    decode_processes: int | None = None  # None: the service's own default (`auto_decode_processes`)
    precision: str = "auto"
    providers: str = "cpu"
    ceiling_batch: int = 32
    ceilings_after: bool = True
    service_env: dict[str, str] = field(default_factory=dict)
    variants: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bento_python: Path = servers.BENTO_PYTHON
    bento_max_latency_ms: int = 1000
    bento_max_batch_size: int = 32
    mlserver_python: Path = servers.MLSERVER_PYTHON
    mlserver_max_batch_size: int = 32  # requests, not images (MLServer merges whole requests)
    mlserver_max_batch_time_ms: float = 5.0
    mlserver_parallel_workers: int = 1  # MLServer's own default: inference in one worker process
    max_other_cores: float = 0.25
    retries: int = 2
    retry_pause_s: float = 10.0
    cold_starts: int = 3
    open_loop: str = "wrk"
    py_spy: Path | None = None
    command: list[str] = field(default_factory=list)


@dataclass
class Measured:
    """A measurement with the CPU accounting of its chosen attempt and how many attempts it took."""

    value: Any
    cpu: CpuShare
    attempts: int
    disturbed: bool
    rss_peak_kb: int
    others_per_attempt: list[float]
    pss_peak_kb: int = 0


def measure(label: str, server_pids: list[int], work: Callable[[], Any], opts: Options) -> Measured:
    """Run `work` under a PhaseMonitor; repeat while other processes used more than the CPU threshold."""
    tries: list[tuple[Any, CpuShare, PhaseMonitor]] = []
    for attempt in range(1, opts.retries + 2):
        monitor = PhaseMonitor(server_pids)
        monitor.start()
        value = work()
        share = monitor.stop()
        tries.append((value, share, monitor))
        if share.others_cores <= opts.max_other_cores:
            break
        log.warning(
            "%s: other processes used %.2f cores (threshold %.2f): disturbed, attempt %d of %d",
            label,
            share.others_cores,
            opts.max_other_cores,
            attempt,
            opts.retries + 1,
        )
        if attempt <= opts.retries:
            time.sleep(opts.retry_pause_s * 2 ** (attempt - 1))  # a build or test run often lasts minutes
    best = min(tries, key=lambda t: t[1].others_cores)
    return Measured(
        best[0],
        best[1],
        len(tries),
        best[1].others_cores > opts.max_other_cores,
        max(t[2].rss_peak_kb for t in tries),
        [round(t[1].others_cores, 3) for t in tries],
        max(t[2].pss_peak_kb for t in tries),
    )


def machine_info() -> dict[str, Any]:
    """What machine and software produced the figures."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from app.settings import available_cpus

    info: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["memory_gb"] = round(int(mem[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    import numpy
    import onnxruntime
    import PIL

    info["versions"] = {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__}
    for tool in ("wrk", "hey"):
        info["versions"][tool] = _tool_version(tool)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=imgs.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        info["git_commit"] = commit or None
    except (OSError, subprocess.TimeoutExpired):
        info["git_commit"] = None
    return info


def _tool_version(tool: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", tool], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def count_results(payload: Any) -> tuple[int, list[str]]:
    """Results in an answer and their top labels.

    Vitrine and naive answer {"results": [...]}; BentoML [...]; MLServer a V2 response whose `results`
    output holds one JSON string per image.
    """
    if isinstance(payload, dict) and "outputs" in payload:
        output: dict[str, Any] = next((o for o in payload["outputs"] if o.get("name") == "results"), {})
        payload = [orjson.loads(item) for item in output.get("data", [])]
    items = payload if isinstance(payload, list) else payload.get("results", [])
    labels = [str(item.get("category", {}).get("label")) for item in items if isinstance(item, dict)]
    return len(items), labels


def service_decode_processes(opts: Options) -> int:
    """The decode processes the service runs with: those asked for, else its own default for the provider
    (on CUDA, a many-core host's CPUs less two)."""
    if opts.decode_processes is not None:
        return opts.decode_processes
    return auto_decode_processes(cuda=opts.providers == "cuda")


class Bench:
    """Holds the run's inputs (images, bodies, model) and builds the result dictionary."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.decode_processes = service_decode_processes(opts)  # which the in-process ceilings then match
        self.workdir = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
        self.jpegs, self.source = imgs.load_jpegs(opts.n_images)
        self.body_sets: dict[str, tuple[Path, int, str]] = {}
        self.wrk = Wrk(self.workdir)
        self.results: dict[str, Any] = {
            "schema": report.SCHEMA,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": opts.command,
            "machine": machine_info(),
            "settings": self._settings(),
            "images": self.source,
            "model": {},
            "ceilings": {},
            "servers": {},
            "ratios": {},
            "goals": [],
        }
        self.reference_labels: list[str] | None = None

    def _settings(self) -> dict[str, Any]:
        o = self.opts
        return {
            "duration_s": o.duration_s,
            "warmup_s": o.warmup_s,
            "threads": o.threads,
            "decode_threads": o.decode_threads,
            "decode_processes": self.decode_processes,
            "precision": o.precision,
            "providers": o.providers,
            "ceiling_batch": o.ceiling_batch,
            "ceilings_after": o.ceilings_after,
            "service_env": o.service_env,
            "max_other_cores": o.max_other_cores,
            "retries": o.retries,
            "open_loop": o.open_loop,
            "bento_max_latency_ms": o.bento_max_latency_ms,
            "bento_max_batch_size": o.bento_max_batch_size,
            "mlserver_max_batch_size": o.mlserver_max_batch_size,
            "mlserver_max_batch_time_ms": o.mlserver_max_batch_time_ms,
            "mlserver_parallel_workers": o.mlserver_parallel_workers,
            "profiles": {k: vars(v) for k, v in PROFILES.items()},
            "url": o.url,
            "variants": {name: env for name, env in o.variants},
        }

    def bodies(self, profile: Profile, kind: str = "multipart") -> tuple[Path, int, str]:
        """The body folder, body count and content type for a profile and a server's body kind (built once)."""
        if profile.raw and kind != "multipart":
            raise ValueError(f"profile {profile.name} sends raw JPEG bodies, which a {kind} server does not take")
        kind = "raw" if profile.raw else kind
        key = f"{profile.images_per_request}-{kind}"
        if key not in self.body_sets:
            count = 64 if profile.images_per_request > 1 else len(self.jpegs)
            payloads = imgs.bodies(self.jpegs, profile.images_per_request, count, kind=kind)
            folder = imgs.write_bodies(self.workdir / key, payloads)
            ctype = {"raw": "image/jpeg", "v2": imgs.V2_TYPE, "multipart": imgs.MULTIPART_TYPE}[kind]
            self.body_sets[key] = (folder, count, ctype)
        return self.body_sets[key]

    # ----- ceilings -----

    def model_version(self) -> Any:
        """The model version the service serves by default (or as VITRINE_* in the service env say)."""
        from app.repository import configured
        from app.settings import Settings

        chosen: dict[str, Any] = {
            k[len("VITRINE_") :].lower(): v
            for k, v in self.opts.service_env.items()
            if k[len("VITRINE_") :].lower() in ("model_repository", "model_name", "model_version")
        }
        return configured(Settings(**chosen))

    def ceilings(self) -> None:
        """The model alone and the in-process pipeline, on the same model file and thread counts."""
        import numpy as np

        from app.preprocess import decode
        from app.runtime import choose_precision
        from bench import ceilings

        version = self.model_version()
        opts = self.opts
        precision = choose_precision(version, opts.precision, opts.providers)
        path = version.file_for(precision)
        self.results["model"] = {
            "name": version.metadata.name,
            "version": version.metadata.version,
            "precision": precision,
            "providers": opts.providers,
            "path": str(path),
        }
        self.model_path = path
        batch = opts.ceiling_batch
        chosen = list(islice(cycle(self.jpegs), batch))
        pixels = np.stack([decode(b, version.metadata.preprocessing) for b in chosen])
        in_process = partial(
            ceilings.in_process,
            version,
            self.jpegs,
            precision=precision,
            threads=opts.threads,
            decode_threads=opts.decode_threads,
            batch=batch,
            duration_s=opts.ceiling_s,
            providers=opts.providers,
            decode_processes=self.decode_processes,
        )
        alone = partial(
            ceilings.onnxruntime_alone,
            path,
            pixels,
            threads=opts.threads,
            duration_s=opts.ceiling_s,
            providers=opts.providers,
        )
        self.ceiling_work: dict[str, Callable[[], Any]] = {
            "onnxruntime": alone,
            "in_process": lambda: in_process(pipelined=False),
            "in_process_pipelined": lambda: in_process(pipelined=True),
            # onnxruntime's spinning threads compete with decoding for the cores: the ceiling is the
            # better of the two settings, so that a service setting cannot beat its own ceiling.
            "in_process_pipelined_nospin": lambda: in_process(pipelined=True, spinning=False),
            # The naive peer's shape without HTTP: each worker decodes and runs its own batch.
            "in_process_workers": lambda: ceilings.in_process_workers(
                version,
                self.jpegs,
                precision=precision,
                workers=opts.threads,
                batch=batch,
                duration_s=opts.ceiling_s,
                providers=opts.providers,
            ),
        }
        if opts.providers == "cuda":
            # The model with its input already on the GPU: what the card does without the copy in.
            self.ceiling_work["onnxruntime_on_device"] = partial(alone, on_device=True)
        self.measure_ceilings("before")

    def measure_ceilings(self, stage: str) -> None:
        """Run every ceiling loop once; `stage` is "before" or "after" the service's phases.

        The VM's speed drifts by 15-25 % within minutes, so a ceiling measured only before the service
        favours or penalises the service by the drift. After the second pass each ceiling is the mean of
        its two loops, which bracket the service's phases; both stay in the record.
        """
        for name, fn in self.ceiling_work.items():
            m = measure(f"ceiling {name} ({stage})", [], fn, self.opts)
            record = {
                **m.value,
                "cpu": m.cpu.as_dict(),
                "disturbed": m.disturbed,
                "attempts": m.attempts,
                "others_per_attempt": m.others_per_attempt,
            }
            log.info("ceiling %s (%s): %.0f img/s", name, stage, m.value["images_per_s"])
            if stage == "before":
                self.results["ceilings"][name] = {**record, "before_images_per_s": record["images_per_s"]}
                continue
            first = self.results["ceilings"][name]
            both = (first["before_images_per_s"], record["images_per_s"])
            first.update(
                images_per_s=round(sum(both) / 2, 1),
                after_images_per_s=record["images_per_s"],
                after_cpu=record["cpu"],
                disturbed=first["disturbed"] or record["disturbed"],
            )

    # ----- servers -----

    def preflight(self, server: servers.RunningServer, raw: bool = False) -> dict[str, Any]:
        """One request of 16 images: the answer must hold 16 results; labels are compared across servers."""
        if server.spec.body == "v2":
            status, data = servers.http_post(server.url, imgs.v2_body(self.jpegs[:16]), imgs.V2_TYPE)
        else:
            status, data = servers.http_post(server.url, imgs.multipart_body(self.jpegs[:16]), imgs.MULTIPART_TYPE)
        if status != 200:
            raise RuntimeError(f"{server.spec.name}: preflight answered {status}: {data[:500]!r}")
        n, labels = count_results(orjson.loads(data))
        if n != 16:
            raise RuntimeError(f"{server.spec.name}: preflight got {n} results for 16 images")
        if self.reference_labels is None:
            self.reference_labels = labels
        agree = sum(a == b for a, b in zip(labels, self.reference_labels, strict=False)) / 16
        out: dict[str, Any] = {"results": n, "top1_agreement_with_first_server": agree}
        if raw:
            status, data = servers.http_post(server.url, self.jpegs[0], "image/jpeg")
            out["raw_body_status"] = status
        return out

    def load(
        self, server: servers.RunningServer, profile: Profile, duration_s: float, rate_rps: float | None = None
    ) -> LoadResult:
        """One load-generator run of a profile against a server."""
        folder, count, ctype = self.bodies(profile, server.spec.body)
        timeout = duration_s + 90
        if rate_rps is None:
            command = self.wrk.command(
                server.url, folder, count, ctype, connections=profile.connections, duration_s=duration_s
            )
            return parse_wrk(
                run_process(command, timeout),
                connections=profile.connections,
                images_per_request=profile.images_per_request,
            )
        connections = open_loop_connections(rate_rps)
        if self.opts.open_loop == "hey":
            command = hey_command(
                server.url,
                folder / "00000.body",
                ctype,
                connections=connections,
                duration_s=duration_s,
                rate_rps=rate_rps,
            )
            return parse_hey_csv(
                run_process(command, timeout),
                connections=connections,
                images_per_request=profile.images_per_request,
                duration_s=duration_s,
                target_rate_rps=rate_rps,
            )
        command = self.wrk.command(
            server.url, folder, count, ctype, connections=connections, duration_s=duration_s, rate_rps=rate_rps
        )
        return parse_wrk(
            run_process(command, timeout),
            connections=connections,
            images_per_request=profile.images_per_request,
            target_rate_rps=rate_rps,
        )

    def scrape_batches(self, server: servers.RunningServer) -> tuple[float, float] | None:
        """(sum, count) of the service's vitrine_batch_size histogram, for the mean batch of a phase."""
        if not server.spec.metrics_path:
            return None
        status, data = servers.http_get(server.spec.base + server.spec.metrics_path)
        if status != 200:
            return None
        values = {}
        for line in data.decode().splitlines():
            if line.startswith(("vitrine_batch_size_sum ", "vitrine_batch_size_count ")):
                name, value = line.split()
                values[name] = float(value)
        return values.get("vitrine_batch_size_sum", 0.0), values.get("vitrine_batch_size_count", 0.0)

    def run_profile(self, server: servers.RunningServer, profile: Profile, block: dict[str, Any]) -> None:
        """Warm up, then measure one profile against one server (with retries when disturbed)."""
        rate_rps = None
        if profile.load_fraction is not None:
            capacity = report.rate(block["phases"].get("B"))
            if not capacity:
                log.warning("%s %s: needs profile B's capacity first; skipped", server.spec.name, profile.name)
                return
            rate_rps = capacity * profile.load_fraction / profile.images_per_request
        if self.opts.warmup_s > 0:
            self.load(server, profile, self.opts.warmup_s, rate_rps)
        pids = [server.pid] if server.pid else ([self.opts.service_pid] if self.opts.service_pid else [])

        def work() -> tuple[LoadResult, float | None]:
            before = self.scrape_batches(server)
            spy = None
            if self.opts.py_spy and pids and server.spec.name.startswith("vitrine"):
                threads_before = thread_jiffies(pids[0])
                started = time.monotonic()
                spy = self.start_py_spy(pids[0], f"{server.spec.name}-{profile.name}")
            result = self.load(server, profile, self.opts.duration_s, rate_rps)
            if spy is not None:
                spy.wait(60)
                self.write_thread_cpu(
                    pids[0], threads_before, time.monotonic() - started, f"{server.spec.name}-{profile.name}"
                )
            after = self.scrape_batches(server)
            mean = None
            if before and after and after[1] > before[1]:
                mean = round((after[0] - before[0]) / (after[1] - before[1]), 2)
            return result, mean

        m = measure(f"{server.spec.name} {profile.name}", pids, work, self.opts)
        load, batch_mean = m.value
        record: dict[str, Any] = {
            "profile": profile.name,
            "server": server.spec.name,
            "load": load.as_dict(),
            "cpu": m.cpu.as_dict(),
            "disturbed": m.disturbed,
            "attempts": m.attempts,
            "others_per_attempt": m.others_per_attempt,
            "rss_peak_mb": round(m.rss_peak_kb / 1024, 1),
            "pss_peak_mb": round(m.pss_peak_kb / 1024, 1),
            "batch_mean": batch_mean,
        }
        block["phases"][profile.name] = record
        block["rss_peak_mb"] = max(block.get("rss_peak_mb") or 0.0, record["rss_peak_mb"])
        block["pss_peak_mb"] = max(block.get("pss_peak_mb") or 0.0, record["pss_peak_mb"])
        lat = load.latency_ms
        log.info(
            "%s %s: %.0f img/s, p50 %.1f p99 %.1f ms, %d non-2xx, others %.2f cores%s",
            server.spec.name,
            profile.name,
            load.images_per_s,
            lat["p50"],
            lat["p99"],
            load.requests - load.ok,
            m.cpu.others_cores,
            " DISTURBED" if m.disturbed else "",
        )

    def write_thread_cpu(self, pid: int, before: dict[int, int], wall_s: float, label: str) -> None:
        """Cores used per thread group of the service during the phase, next to py-spy's file."""
        assert self.opts.py_spy is not None
        after = thread_jiffies(pid)
        used = {tid: after[tid] - before.get(tid, 0) for tid in after}
        raw = self.opts.py_spy / f"{label}.txt"
        names = stacks.thread_names(raw.read_text()) if raw.exists() else {}
        groups = stacks.cpu_by_thread_group(used, names, CLK_TCK, wall_s)
        (self.opts.py_spy / f"{label}-threads.json").write_text(json.dumps(groups, indent=2) + "\n")
        log.info("%s threads (cores): %s", label, groups)

    def start_py_spy(self, pid: int, label: str) -> subprocess.Popen[bytes]:
        """py-spy recording the service for the phase's duration (collapsed stacks, one line per stack)."""
        assert self.opts.py_spy is not None
        self.opts.py_spy.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).parent / "py-spy"
        out = self.opts.py_spy / f"{label}.txt"
        command = [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(self.opts.duration_s))),
            "--rate",
            "100",
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(out),
        ]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def serve_and_measure(
        self, name: str, spec_for: Callable[[int], servers.ServerSpec], profiles: tuple[str, ...], cold_starts: int = 1
    ) -> None:
        """Start a server (`cold_starts` times, for the cold-start figure), run its profiles, stop it."""
        block: dict[str, Any] = {"cold_start_s": [], "phases": {}}
        self.results["servers"][name] = block
        logs = self.workdir / "logs"
        running = None
        try:
            for i in range(max(1, cold_starts)):
                spec = spec_for(servers.free_port())
                spec.name = name  # variants of the service are told apart in logs and py-spy files
                running = servers.start(spec, logs)
                block["cold_start_s"].append(round(running.cold_start_s or 0.0, 3))
                if i < cold_starts - 1:
                    servers.stop(running)
            assert running is not None
            block["cold_start_median_s"] = round(statistics.median(block["cold_start_s"]), 3)
            block["preflight"] = self.preflight(running, raw=name not in ("bentoml", "mlserver"))
            for profile in profiles:
                self.run_profile(running, PROFILES[profile], block)
            if running.pid:
                hwm = vm_hwm_kb(running.pid)
                block["vm_hwm_mb"] = round(hwm / 1024, 1) if hwm else None
        except Exception as exc:  # one server failing must not lose the others' figures
            log.exception("%s failed", name)
            block["error"] = str(exc)[:2000]
        finally:
            if running is not None:
                servers.stop(running)

    def measure_url(self) -> None:
        """Profiles against a service that is already running (no cold start; RSS only with its pid)."""
        assert self.opts.url is not None
        base = self.opts.url.rstrip("/")
        base = base.removesuffix("/classify")
        spec = servers.ServerSpec("vitrine", [], {}, 0, "/health/ready", metrics_path="/metrics", given_base=base)
        running = servers.RunningServer(spec, None, None, None)
        block: dict[str, Any] = {"cold_start_s": [], "phases": {}, "url": base}
        self.results["servers"]["vitrine"] = block
        block["preflight"] = self.preflight(running, raw=True)
        for profile in self.opts.profiles:
            self.run_profile(running, PROFILES[profile], block)

    def run(self) -> dict[str, Any]:
        """The whole benchmark; returns the result dictionary (also written by the caller)."""
        started = time.monotonic()
        opts = self.opts
        self.ceilings()
        if opts.url:
            self.measure_url()
        else:
            self.serve_and_measure("vitrine", self.vitrine_spec, opts.profiles, opts.cold_starts)
            for name, env in opts.variants:  # the service again with other settings, same ceilings and load
                self.serve_and_measure(f"vitrine+{name}", partial(self.vitrine_spec, variant=env), opts.profiles)
        if opts.ceilings_after:
            self.measure_ceilings("after")
        if "naive" in opts.peers:
            self.serve_and_measure("naive", self.naive_spec, PEER_PROFILES)
        # The peers that run from their own virtual environments; one that is missing is recorded as not run.
        for name, python, spec in (
            ("bentoml", opts.bento_python, self.bento_spec),
            ("mlserver", opts.mlserver_python, self.mlserver_spec),
        ):
            if name not in opts.peers:
                continue
            if python.exists():
                self.serve_and_measure(name, spec, PEER_PROFILES)
            else:
                self.results["servers"][name] = {"phases": {}, "error": f"{python} not found"}
        self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["wall_s"] = round(time.monotonic() - started, 1)
        self.results["ratios"] = report.compute_ratios(self.results)
        self.results["goals"] = report.evaluate_goals(self.results)
        return self.results

    def vitrine_spec(self, port: int, variant: dict[str, str] | None = None) -> servers.ServerSpec:
        """The service with the run's thread counts, any extra VITRINE_* settings, and a variant's."""
        env = {
            "VITRINE_INTRA_OP_THREADS": str(self.opts.threads),
            "VITRINE_DECODE_THREADS": str(self.opts.decode_threads),
            "VITRINE_PRECISION": self.opts.precision,
            "VITRINE_PROVIDERS": self.opts.providers,
            **self.opts.service_env,
            **(variant or {}),
        }
        if self.opts.decode_processes is not None:  # else the service's own default, which the ceilings match
            env.setdefault("VITRINE_DECODE_PROCESSES", str(self.opts.decode_processes))
        return servers.vitrine_spec(port, env)

    def peer_env(self) -> dict[str, str]:
        """What every peer is told: the same model file and thread counts."""
        return {
            "BENCH_MODEL": str(self.model_path),
            "BENCH_THREADS": str(self.opts.threads),
            "BENCH_DECODE_THREADS": str(self.opts.decode_threads),
        }

    def naive_spec(self, port: int) -> servers.ServerSpec:
        """The naive FastAPI peer."""
        return servers.naive_spec(port, self.peer_env())

    def bento_spec(self, port: int) -> servers.ServerSpec:
        """The BentoML peer with the run's batching settings."""
        env = {
            **self.peer_env(),
            "BENCH_MAX_LATENCY_MS": str(self.opts.bento_max_latency_ms),
            "BENCH_MAX_BATCH_SIZE": str(self.opts.bento_max_batch_size),
        }
        return servers.bento_spec(port, env, self.opts.bento_python)

    def mlserver_spec(self, port: int) -> servers.ServerSpec:
        """The MLServer peer with the run's batching settings (its settings files go to the run's folder)."""
        o = self.opts
        return servers.mlserver_spec(
            port,
            self.peer_env(),
            self.workdir / f"mlserver-{port}",
            max_batch_size=o.mlserver_max_batch_size,
            max_batch_time_ms=o.mlserver_max_batch_time_ms,
            parallel_workers=o.mlserver_parallel_workers,
            python=o.mlserver_python,
        )

"""Drive a server with wrk (closed loop, or a Poisson open loop scheduled in wrk's LuaJIT) or hey."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# Shared by both wrk scripts: load the pre-built bodies and rotate through them, one per request.
_WRK_COMMON = r"""
reqs, idx = {}, 0
threads = {}
late, late_ms, sent = 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local dir, n, ctype, path = args[1], tonumber(args[2]), args[3], args[4]
  rate = tonumber(args[5] or "0")
  math.randomseed(tonumber(args[6] or "1"))
  for i = 1, n do
    local f = assert(io.open(string.format("%s/%05d.body", dir, i - 1), "rb"))
    local body = f:read("*a")
    f:close()
    reqs[i] = wrk.format("POST", path, {["Content-Type"] = ctype}, body)
  end
  idx = math.random(n) - 1
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local l, lm, s = 0, 0, 0
  for _, t in ipairs(threads) do
    l = l + (t:get("late") or 0)
    lm = lm + (t:get("late_ms") or 0)
    s = s + (t:get("sent") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},' ..
    '"scheduled":%d,"late":%d,"late_ms_total":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9), s, l, lm))
end
"""

# Open loop: every connection, when free, takes the next slot of one Poisson arrival schedule and
# waits for it. Requests go out at the target rate whatever the latency, as long as a connection is
# free; a slot already past when claimed is counted as late (its client-side wait is not in latency).
_WRK_OPEN = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local next_at = nil

local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function delay()
  local t = now_ms()
  if next_at == nil then next_at = t end
  local wait = next_at - t
  if wait < -1 then
    late = late + 1
    late_ms = late_ms - wait
  end
  next_at = next_at - math.log(1 - math.random()) * 1000 / rate
  sent = sent + 1
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)
end
"""


def wrk_script(open_loop: bool) -> str:
    """The Lua script for wrk: closed loop, or open loop when `open_loop` (needs LuaJIT's ffi)."""
    return _WRK_COMMON + (_WRK_OPEN if open_loop else "")


@dataclass
class LoadResult:
    """What one load-generator run measured."""

    tool: str
    connections: int
    images_per_request: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    target_rate_rps: float | None = None
    late: int = 0
    scheduled: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Images answered with 2xx per second."""
        return self.ok * self.images_per_request / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        """Requests answered with 2xx per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """The result with derived rates, for JSON."""
        out = asdict(self)
        out["images_per_s"] = round(self.images_per_s, 1)
        out["requests_per_s"] = round(self.requests_per_s, 1)
        return out


def parse_wrk(
    stdout: str, *, connections: int, images_per_request: int, target_rate_rps: float | None = None
) -> LoadResult:
    """Read the WRKJSON line that the script's `done` prints."""
    line = next((x for x in stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line:\n{stdout[-2000:]}")
    data = json.loads(line[len("WRKJSON ") :])
    errors = {k: int(v) for k, v in data["errors"].items()}
    requests = int(data["requests"])
    lat = {k: round(v / 1000, 2) for k, v in data["latency_us"].items()}
    return LoadResult(
        tool="wrk",
        connections=connections,
        images_per_request=images_per_request,
        duration_s=data["duration_us"] / 1e6,
        requests=requests,
        ok=max(0, requests - errors["status"]),
        errors=errors,
        latency_ms=lat,
        target_rate_rps=target_rate_rps,
        late=int(data["late"]),
        scheduled=int(data["scheduled"]),
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def parse_hey_csv(
    text: str, *, connections: int, images_per_request: int, duration_s: float, target_rate_rps: float | None = None
) -> LoadResult:
    """hey's `-o csv` rows (one per request) into a result; latency over 2xx answers only."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    requests = 0
    for row in csv.DictReader(io.StringIO(text)):
        requests += 1
        status = row.get("status-code", "")
        statuses[status] = statuses.get(status, 0) + 1
        if status.startswith("2"):
            latencies.append(float(row["response-time"]) * 1000)
    latencies.sort()
    ok = len(latencies)
    lat = {"mean": round(sum(latencies) / ok, 2) if ok else 0.0, "max": round(latencies[-1], 2) if ok else 0.0}
    for name, p in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        lat[name] = round(percentile(latencies, p), 2)
    return LoadResult(
        tool="hey",
        connections=connections,
        images_per_request=images_per_request,
        duration_s=duration_s,
        requests=requests,
        ok=ok,
        errors={"status": requests - ok},
        latency_ms=lat,
        target_rate_rps=target_rate_rps,
        statuses=statuses,
    )


def open_loop_connections(rate_rps: float, horizon_s: float = 0.6, low: int = 16, high: int = 512) -> int:
    """Connections for an open loop: enough that latencies up to `horizon_s` leave one free for each slot."""
    return max(low, min(high, math.ceil(rate_rps * horizon_s)))


class Wrk:
    """Runs wrk with the rotating-body script; `start` returns the process so its CPU can be measured."""

    def __init__(self, workdir: Path, binary: str = "wrk") -> None:
        self.binary = shutil.which(binary) or binary
        self.workdir = workdir

    def command(
        self,
        url: str,
        bodies_dir: Path,
        n_bodies: int,
        content_type: str,
        *,
        connections: int,
        duration_s: float,
        rate_rps: float | None = None,
        seed: int = 1,
    ) -> list[str]:
        """The wrk command line for one run."""
        open_loop = rate_rps is not None
        script = self.workdir / ("open.lua" if open_loop else "closed.lua")
        script.write_text(wrk_script(open_loop))
        path = urlsplit(url).path or "/"
        return [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            url,
            "--",
            str(bodies_dir),
            str(n_bodies),
            content_type,
            path,
            str(rate_rps or 0),
            str(seed),
        ]


def hey_command(
    url: str,
    body_file: Path,
    content_type: str,
    *,
    connections: int,
    duration_s: float,
    rate_rps: float,
    binary: str = "hey",
) -> list[str]:
    """hey at an approximate rate: `-q` is per worker and each worker waits for its answer (see README)."""
    per_worker = rate_rps / connections
    return [
        shutil.which(binary) or binary,
        "-z",
        f"{max(1, round(duration_s))}s",
        "-c",
        str(connections),
        "-q",
        f"{per_worker:.3f}",
        "-m",
        "POST",
        "-T",
        content_type,
        "-D",
        str(body_file),
        "-t",
        "60",
        "-o",
        "csv",
        url,
    ]


def run_process(command: list[str], timeout_s: float) -> str:
    """Run a load generator to the end and return its stdout; a non-zero exit is an error."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout

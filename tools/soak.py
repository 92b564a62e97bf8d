"""Soak test: the service under steady load for minutes, watching resident memory and errors.

Starts `vitrine serve` on 127.0.0.1, measures its capacity with a short closed-loop `hey` run, then
drives it at a fraction of that rate (default 80%) for the given duration while sampling VmRSS.
Passes when there are no errors and the RSS of the last minute is within 5% of the second minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "catalogue" / "10102.jpg"


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB, from /proc/<pid>/status."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def wait_ready(url: str, seconds: float = 60) -> float:
    """Seconds until /health/ready answers 200."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("service did not become ready")


def hey(url: str, *, seconds: float, concurrency: int, rate_per_worker: float | None = None) -> dict[str, object]:
    """Run hey with one real catalogue JPEG per request as the raw body; parse its summary."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "image/jpeg", "-D", str(PHOTO)]
    if rate_per_worker:
        command += ["-q", f"{rate_per_worker:.2f}"]
    out = subprocess.run([*command, f"{url}/classify"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    tail = out[out.find("Error distribution") :] if "Error distribution" in out else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", tail, re.MULTILINE))
    latency = {p: float(v) for p, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    return {"rps": rps, "codes": codes, "transport_errors": errors, "latency_s": latency}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fraction", type=float, default=0.8, help="share of measured capacity to offer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "soak.json")
    args = parser.parse_args()

    url = f"http://127.0.0.1:{args.port}"
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server process
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(args.port)],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        env=os.environ.copy(),
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        cold_start = wait_ready(url)
        capacity = hey(url, seconds=15, concurrency=args.concurrency)
        rate = capacity["rps"] * args.fraction  # type: ignore[operator]
        start = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - start, rss_mb(server.pid)))
                stop.wait(5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        soak = hey(
            url, seconds=args.minutes * 60, concurrency=args.concurrency, rate_per_worker=rate / args.concurrency
        )
        stop.set()
        sampler.join()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)

    second_minute = [r for t, r in samples if 60 <= t < 120] or [samples[0][1]]
    last_minute = [r for t, r in samples if t >= samples[-1][0] - 60]
    growth = statistics.mean(last_minute) / statistics.mean(second_minute) - 1
    non_200 = sum(n for code, n in soak["codes"].items() if code != 200)  # type: ignore[union-attr]
    result = {
        "minutes": args.minutes,
        "cold_start_s": round(cold_start, 2),
        "capacity_rps": capacity["rps"],
        "offered_rps": round(rate, 1),
        "achieved_rps": soak["rps"],
        "codes": soak["codes"],
        "non_200": non_200,
        "transport_errors": soak["transport_errors"],
        "latency_s": soak["latency_s"],
        "rss_mb": {
            "second_minute": round(statistics.mean(second_minute), 1),
            "last_minute": round(statistics.mean(last_minute), 1),
            "peak": round(max(r for _, r in samples), 1),
            "growth_pct": round(100 * growth, 2),
        },
        "samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "passed": non_200 == 0 and soak["transport_errors"] == 0 and growth <= 0.05,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line of the benchmark: options, one run, then the table, JSON and plot in the results folder."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import shutil
import sys
from pathlib import Path

from app.settings import AUTO_DECODE_PROCESSES_MIN_CPUS
from bench import report
from bench.images import ROOT
from bench.runner import DEFAULT_PROFILES, PEER_PROFILES, PROFILES, Bench, Options
from bench.servers import BENTO_PYTHON, MLSERVER_PYTHON

log = logging.getLogger("bench")


def _csv(allowed: tuple[str, ...] | list[str]) -> type:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip() and x.strip() != "none")
        unknown = [x for x in items if x not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return items

    return parse  # type: ignore[return-value]


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("VITRINE_"):
        raise argparse.ArgumentTypeError("expected VITRINE_NAME=value")
    return key, value


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, sep, rest = text.partition(":")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError("expected NAME:VITRINE_X=1[,VITRINE_Y=2]")
    return name, dict(_env(item) for item in rest.split(",") if item)


def parser() -> argparse.ArgumentParser:
    """The argument parser (`vitrine bench --help`)."""
    from app.settings import available_cpus

    cpus = available_cpus()
    p = argparse.ArgumentParser(
        prog="vitrine bench",
        description=(
            "Load-test the service with wrk/hey on real catalogue JPEGs against its in-process ceiling and peers. "
            f"Profiles: A = 16 images/request from 4 connections; B = 1 image/request (multipart) from 32; "
            f"B-raw = B as a raw image/jpeg body; C50/C90 = open loop at 50%/90% of B's capacity "
            f"(C70, C80 on request). "
            f"Peers run profiles {', '.join(PEER_PROFILES)}."
        ),
    )
    p.add_argument("--url", help="target a running service (base URL or its /classify) instead of starting one")
    p.add_argument("--service-pid", type=int, help="with --url: the service's pid, for its CPU and memory")
    p.add_argument("--results", type=Path, default=ROOT / "out" / "bench", help="folder for JSON, PNG, table")
    p.add_argument("--name", default="bench", help="file stem of the outputs (default bench)")
    p.add_argument(
        "--profiles",
        type=_csv(list(PROFILES)),
        default=DEFAULT_PROFILES,
        help=f"comma-separated, of {', '.join(PROFILES)} (default {','.join(DEFAULT_PROFILES)})",
    )
    p.add_argument(
        "--peers",
        type=_csv(["naive", "bentoml", "mlserver"]),
        default=("naive", "bentoml", "mlserver"),
        help="comma-separated peers to run, or none",
    )
    # Phase lengths and load size; each `dest` is the name of its `Options` field.
    for flag, dest, kind, metavar, default, text in (
        ("--duration", "duration_s", float, "SECONDS", 15.0, "seconds per measured phase"),
        ("--warmup", "warmup_s", float, "SECONDS", 3.0, "unmeasured seconds before each phase"),
        ("--ceiling-duration", "ceiling_s", float, "SECONDS", 8.0, "seconds per ceiling loop"),
        ("--images", "n_images", int, "N", 256, "distinct catalogue JPEGs in the load"),
    ):
        p.add_argument(
            flag, dest=dest, metavar=metavar, type=kind, default=default, help=f"{text} (default {default:g})"
        )
    p.add_argument("--threads", type=int, default=cpus, help=f"onnxruntime intra-op threads everywhere ({cpus})")
    p.add_argument("--decode-threads", type=int, default=cpus, help=f"decode threads everywhere ({cpus})")
    p.add_argument(
        "--decode-processes",
        type=int,
        default=None,
        help="decode in this many processes instead of threads, in the service and the in-process ceilings "
        "(default: the service's own: 0 on the CPU; on CUDA with at least "
        f"{AUTO_DECODE_PROCESSES_MIN_CPUS} CPUs, the CPUs less two)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8", "fp16"])
    p.add_argument(
        "--providers",
        default="cpu",
        choices=["cpu", "cuda"],
        help="execution provider of the service and every ceiling (cuda needs onnxruntime-gpu and a GPU; "
        "the peers run on the CPU only, so cuda needs --peers none)",
    )
    p.add_argument("--ceiling-batch", type=int, default=32, help="batch size of the ceiling loops (default 32)")
    p.add_argument(
        "--no-ceilings-after",
        dest="ceilings_after",
        action="store_false",
        help="measure the ceilings only before the service, not again after its phases (each ceiling is then "
        "one loop instead of the mean of two that bracket the service)",
    )
    p.add_argument(
        "--env",
        dest="service_env",
        type=_env,
        action="append",
        default=[],
        metavar="VITRINE_NAME=value",
        help="extra service setting, repeatable (e.g. VITRINE_MAX_BATCH_DELAY_MS=2)",
    )
    p.add_argument(
        "--variant",
        dest="variants",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME:VITRINE_X=1,...",
        help="also run the service with these settings (as server vitrine+NAME), repeatable",
    )
    p.add_argument("--bento-python", type=Path, default=BENTO_PYTHON, help="python of the BentoML venv")
    p.add_argument("--bento-max-latency-ms", type=int, default=1000)
    p.add_argument("--bento-max-batch-size", type=int, default=32)
    p.add_argument("--mlserver-python", type=Path, default=MLSERVER_PYTHON, help="python of the MLServer venv")
    p.add_argument("--mlserver-max-batch-size", type=int, default=32, help="requests (not images) MLServer merges (32)")
    p.add_argument(
        "--mlserver-max-batch-time-ms",
        type=float,
        default=5.0,
        help="longest MLServer waits to fill a batch (5, the service's own batch delay)",
    )
    p.add_argument(
        "--mlserver-parallel-workers",
        type=int,
        default=1,
        help="MLServer inference worker processes, its own default; 0 runs inference in its server process (1)",
    )
    p.add_argument(
        "--max-other-cores",
        type=float,
        default=0.25,
        help="CPU (in cores) other processes may use during a phase before it is disturbed (0.25)",
    )
    p.add_argument("--retries", type=int, default=2, help="repeats of a disturbed phase (default 2)")
    p.add_argument("--cold-starts", type=int, default=3, help="service starts timed to ready (default 3)")
    p.add_argument(
        "--open-loop",
        choices=["wrk", "hey"],
        default="wrk",
        help="C profiles: wrk with a Poisson schedule in Lua (default) or hey -q (bursty)",
    )
    p.add_argument("--py-spy", type=Path, help="record the service with py-spy into this folder (skews timings)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s phases, 1 s warm-up, 64 images, no retries")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def options(args: argparse.Namespace, argv: list[str]) -> Options:
    """Options from parsed arguments, matched by name (each option's `dest` is its `Options` field);
    `--quick` shortens everything."""
    if args.providers == "cuda" and args.peers:
        raise SystemExit("vitrine bench: --providers cuda runs only Vitrine (the peers are CPU-only): add --peers none")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options) if hasattr(args, f.name)}
    values["service_env"] = dict(args.service_env)
    if args.quick:
        values.update(duration_s=3.0, warmup_s=1.0, ceiling_s=2.0, n_images=64, retries=0, cold_starts=1)
    return Options(**values, command=["vitrine", "bench", *argv])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write <name>.json, <name>.png and <name>.txt."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        print(
            f"vitrine bench: {' and '.join(missing)} not found; install with: apt-get install -y hey wrk",
            file=sys.stderr,
        )
        return 2
    opts = options(args, argv)
    opts.results.mkdir(parents=True, exist_ok=True)
    bench = Bench(opts)
    log.info("images: %s; work folder %s; command: %s", bench.source, bench.workdir, shlex.join(opts.command))
    results = bench.run()
    failed = [name for name, block in results["servers"].items() if block.get("error")]
    if failed:
        log.warning("%s failed; server logs kept in %s", ", ".join(failed), bench.workdir / "logs")
    else:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    table = report.format_table(results)
    stem = opts.results / opts.name
    report.write_json(results, stem.with_suffix(".json"))
    stem.with_suffix(".txt").write_text(table + "\n")
    report.plot(results, stem.with_suffix(".png"))
    print(table)
    print(f"\nwrote {stem}.json, {stem}.png, {stem}.txt")
    return 0

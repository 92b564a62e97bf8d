"""What the CUDA path does with the served model, checked on a machine with onnxruntime-gpu and a GPU.

    python -m bench.gpu_probe --out out/gpu --seconds 1.5

Four checks, printed as Markdown and written to <out>/gpu-probe.json:
- parity: every head's top-1 on CUDA against the CPU provider on the same file, on real catalogue JPEGs;
- placement: which execution provider runs each node (the memory vote's TopK/Gather included), from
  onnxruntime's profile;
- the model alone on CUDA by batch size, with the batch copied in from the host (as the service runs it)
  and with it already on the GPU (IO binding);
- decode + preprocess (`app.preprocess.decode`) on 1..N threads: the CPU side that feeds the GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.preprocess import decode, decode_many, decode_pool
from app.repository import ModelVersion, configured
from app.runtime import Runtime
from app.settings import Settings, available_cpus
from bench.ceilings import onnxruntime_alone
from bench.images import load_jpegs
from bench.memory_cost import node_events


def gpu_name() -> str:
    """The GPU as nvidia-smi names it, or why it could not say."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


def parity(version: ModelVersion, pixels: np.ndarray, precision: str, provider: str = "cuda") -> dict[str, Any]:
    """Top-1 agreement and largest probability difference per head: CUDA (or `provider`) against CPU."""
    cuda = Runtime(version, precision=precision, providers=provider, intra_op_threads=1)
    cpu = Runtime(version, precision=precision, providers="cpu", intra_op_threads=available_cpus())
    cuda.warm_up(32)
    heads: dict[str, Any] = {}
    for start in range(0, len(pixels), 32):
        a, b = cuda.run(pixels[start : start + 32]), cpu.run(pixels[start : start + 32])
        for head in version.metadata.heads:
            pa, pb = a[head.output], b[head.output]
            row = heads.setdefault(head.name, {"agree": 0, "n": 0, "max_abs_prob_diff": 0.0})
            row["agree"] += int((pa.argmax(1) == pb.argmax(1)).sum())
            row["n"] += len(pa)
            row["max_abs_prob_diff"] = max(row["max_abs_prob_diff"], float(np.abs(pa - pb).max()))
    for row in heads.values():
        row["top1_agreement"] = round(row["agree"] / row["n"], 4)
        row["max_abs_prob_diff"] = round(row["max_abs_prob_diff"], 4)
    return {"provider": cuda.provider, "reference": cpu.provider, "precision": cuda.precision, "heads": heads}


def placement(model: Path, pixels: np.ndarray, provider: str = "cuda") -> dict[str, Any]:
    """Nodes per execution provider, and the op types that run outside CUDA, from a profiled run."""
    seen = {
        e["name"]: (e["args"]["provider"], e["args"].get("op_name", "?"))
        for e in node_events(str(model), pixels, runs=3, threads=1, providers=provider)
        if "provider" in e.get("args", {})
    }
    by_provider = Counter(provider for provider, _ in seen.values())
    off_cuda = Counter(op for provider, op in seen.values() if provider != "CUDAExecutionProvider")
    vote_ops = Counter(
        f"{op} on {provider}"
        for provider, op in seen.values()
        if op in ("TopK", "Gather", "GatherElements", "GatherND")
    )
    return {"nodes_by_provider": dict(by_provider), "ops_off_cuda": dict(off_cuda), "topk_gather": dict(vote_ops)}


def batch_sweep(
    model: Path, pixels: np.ndarray, batches: Sequence[int], seconds: float, provider: str = "cuda"
) -> list[dict[str, Any]]:
    """The model alone per batch size: input copied from the host, and (on CUDA) input already on the GPU."""
    rows = []
    modes = (("host_input", False), ("device_input", True)) if provider == "cuda" else (("host_input", False),)
    for batch in batches:
        chosen = pixels[np.arange(batch) % len(pixels)]
        row: dict[str, Any] = {"batch": batch}
        for key, on_device in modes:
            m = onnxruntime_alone(model, chosen, threads=1, duration_s=seconds, providers=provider, on_device=on_device)
            rate = float(m["images_per_s"])  # type: ignore[arg-type]
            row[key] = {"images_per_s": rate, "ms_per_run": round(1000 * batch / rate, 3)}
        rows.append(row)
    return rows


def decode_rates(
    jpegs: list[bytes], version: ModelVersion, workers: Sequence[int], seconds: float, *, processes: bool = False
) -> list[dict[str, Any]]:
    """Images/s of decode + preprocess as the service runs it (`app.preprocess.decode_many` on chunks of a
    request), on a pool of each size: threads (`VITRINE_DECODE_THREADS`) or processes
    (`VITRINE_DECODE_PROCESSES`)."""
    chunk = partial(decode_many, spec=version.metadata.preprocessing, max_bytes=1 << 30, max_pixels=40_000_000)
    rows = []
    for n in workers:
        pool, _ = decode_pool(n, n if processes else 0)
        with pool:
            list(pool.map(chunk, [jpegs[:4]] * n))  # start the workers
            stream = cycle(jpegs)
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                blobs = list(islice(stream, 16 * n))  # a 16-image request's chunks, n at a time
                done += sum(len(items) for items, _ in pool.map(chunk, [blobs[i::n] for i in range(n)]))
            rate = round(done / (time.perf_counter() - started), 1)
        rows.append({"pool": "processes" if processes else "threads", "workers": n, "images_per_s": rate})
    return rows


def decode_both_pools(jpegs: list[bytes], version: ModelVersion, seconds: float) -> list[dict[str, Any]]:
    """`decode_rates` on threads, then on processes, for 1, 2, 4, 8 and all CPUs."""
    sizes = sorted({1, 2, 4, 8, available_cpus()})
    return decode_rates(jpegs, version, sizes, seconds) + decode_rates(jpegs, version, sizes, seconds, processes=True)


def print_decode(rows: list[dict[str, Any]]) -> None:
    """The decode rates as a Markdown table."""
    print("\n| decode pool | workers | img/s |\n|---|---|---|")
    for row in rows:
        print(f"| {row['pool']} | {row['workers']} | {row['images_per_s']:,.0f} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; print Markdown; write gpu-probe.json."""
    p = argparse.ArgumentParser(prog="python -m bench.gpu_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/gpu"))
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32", "int8"])
    p.add_argument("--seconds", type=float, default=1.5, help="per timed loop (default 1.5)")
    p.add_argument("--batches", default="1,8,32,64,128,256")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--decode-only", action="store_true", help="only the decode rates (no GPU needed)")
    args = p.parse_args(argv)
    if not args.decode_only and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"no CUDA provider in this onnxruntime ({ort.get_available_providers()})", file=sys.stderr)
        return 2
    version = configured(Settings())
    jpegs, source = load_jpegs(args.images)
    if args.decode_only:
        print(f"{available_cpus()} CPUs; {source}")
        print_decode(decode_both_pools(jpegs, version, args.seconds))
        return 0
    model = version.file_for(args.precision)
    pixels = np.stack([decode(b, version.metadata.preprocessing) for b in jpegs])
    cpus = available_cpus()
    result: dict[str, Any] = {
        "gpu": gpu_name(),
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
        "cpus": cpus,
        "model": str(model),
        "images": source,
    }
    result["parity"] = parity(version, pixels, args.precision)
    result["placement"] = placement(model, pixels[:32])
    result["batch_sweep"] = batch_sweep(model, pixels, [int(b) for b in args.batches.split(",")], args.seconds)
    result["decode"] = decode_both_pools(jpegs, version, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-probe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"GPU: {result['gpu']}; onnxruntime {result['onnxruntime']}; {cpus} CPUs; {model.name}; {source}")
    print("\n| head | top-1 agreement CUDA vs CPU | max abs prob diff |\n|---|---|---|")
    for head, row in result["parity"]["heads"].items():
        print(f"| {head} | {row['top1_agreement']:.4f} ({row['n']} photos) | {row['max_abs_prob_diff']} |")
    print(f"\nplacement: {result['placement']}")
    print("\n| batch | host input img/s | ms/run | input on GPU img/s | ms/run |\n|---|---|---|---|---|")
    for row in result["batch_sweep"]:
        h, d = row["host_input"], row.get("device_input", {"images_per_s": 0, "ms_per_run": "-"})
        cells = [
            row["batch"],
            f"{h['images_per_s']:,.0f}",
            h["ms_per_run"],
            f"{d['images_per_s']:,.0f}",
            d["ms_per_run"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print_decode(result["decode"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

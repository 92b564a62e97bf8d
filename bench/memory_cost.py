"""What the part of a model after its pooled features costs (e.g. the memory vote), from onnxruntime's profiler.

    python -m bench.memory_cost MODEL.onnx [MODEL.onnx ...] --batches 1,8,32

For each file and batch size: kernel time per run over all nodes, and over the nodes downstream of the
pooled features (heads, embedding, memory vote; `export.quantize.after_features`). Kernel times come
from onnxruntime's own profile, so they are steadier on a shared machine than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from app.runtime import choose_providers, session_options
from export.quantize import after_features

KERNEL_SUFFIX = "_kernel_time"


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a name on every node (the profile reports kernels by node name)."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    return model


def node_events(
    model: str | bytes, batch: np.ndarray, *, runs: int, threads: int, providers: str = "cpu"
) -> list[dict[str, Any]]:
    """The Node events of onnxruntime's profile over `runs` runs of `batch`: per-kernel times and the
    execution provider of each node."""
    with tempfile.TemporaryDirectory(prefix="vitrine-prof-") as tmp:
        options = session_options(threads, spinning=False)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model, options, providers=choose_providers(providers))
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith(KERNEL_SUFFIX)]


def kernel_ms(
    model: onnx.ModelProto, batch_size: int, *, runs: int, threads: int, nodes: set[str]
) -> tuple[float, float]:
    """(all kernels, kernels of `nodes`) in ms per run of a random uint8 batch."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    events = node_events(model.SerializeToString(), batch, runs=runs, threads=threads)
    total = sum(e["dur"] for e in events)
    part = sum(e["dur"] for e in events if e["name"][: -len(KERNEL_SUFFIX)] in nodes)
    return total / runs / 1000, part / runs / 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    lines = [
        "| model | batch | all kernels ms/run | after the features ms/run | share |",
        "|---|---|---|---|---|",
    ]
    for path in args.models:
        model = named(onnx.load(str(path)))
        nodes = set(after_features(model))
        for batch_size in (int(b) for b in args.batches.split(",")):
            total, part = kernel_ms(model, batch_size, runs=args.runs, threads=args.threads, nodes=nodes)
            lines.append(f"| {path} | {batch_size} | {total:.3f} | {part:.3f} | {part / total:.1%} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

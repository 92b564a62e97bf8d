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

import numpy as np
import onnx
import onnxruntime as ort

from app.runtime import session_options
from export.quantize import after_features

KERNEL_SUFFIX = "_kernel_time"


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a name on every node (the profile reports kernels by node name)."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    return model


def kernel_ms(
    model: onnx.ModelProto, batch_size: int, *, runs: int, threads: int, nodes: set[str]
) -> tuple[float, float]:
    """(all kernels, kernels of `nodes`) in ms per run of a random uint8 batch."""
    with tempfile.TemporaryDirectory(prefix="vitrine-prof-") as tmp:
        options = session_options(threads, spinning=False)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        batch = np.random.default_rng(0).integers(0, 256, (batch_size, *spec.shape[1:]), dtype=np.uint8)
        for _ in range(runs):
            session.run(None, {spec.name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    total = part = 0.0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith(KERNEL_SUFFIX):
            total += event["dur"]
            if event["name"][: -len(KERNEL_SUFFIX)] in nodes:
                part += event["dur"]
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

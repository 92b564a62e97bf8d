"""Figures for docs/decisions/0040 and 0041: the cost of an imported model's prefix, and of each v2 payload.

`python -m bench.open_inference prefix REPOSITORY NAME ORIGINAL.onnx` times the packaged file against the
original on the same batch; `python -m bench.open_inference payloads` sends the committed catalogue photos
to the default model as v2 JSON, v2 binary and native multipart and prints bytes and median times.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from app.repository import resolve
from app.settings import Settings
from export.adapter import InputSpec

log = logging.getLogger(__name__)
CATALOGUE = Path(__file__).resolve().parent.parent / "tests" / "data" / "catalogue"


def best_seconds(run: Callable[[], object], repeats: int = 300) -> float:
    """The best of five mean times of `repeats` runs: the least disturbed on a shared machine."""
    means = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        means.append((time.perf_counter() - started) / repeats)
    return min(means)


def prefix(repository: Path, name: str, original: Path, spec: InputSpec) -> str:
    """The packaged file (uint8 in, prefix) against the original on numpy-prepared input, batch 16."""
    version = resolve(repository, name)
    size = version.metadata.preprocessing.size
    pixels = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    packaged = ort.InferenceSession(str(version.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    source = ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
    x = spec.reference(pixels)
    feed = source.get_inputs()[0].name
    with_prefix = best_seconds(lambda: packaged.run(None, {"pixels": pixels}))
    without = best_seconds(lambda: source.run(None, {feed: x}))
    numpy_side = best_seconds(lambda: spec.reference(pixels))
    return (
        f"batch 16: packaged {with_prefix * 1e6:.0f} us; original {without * 1e6:.0f} us "
        f"(+ {numpy_side * 1e6:.0f} us of numpy preprocessing outside the graph)"
    )


def payloads(rounds: int) -> list[str]:
    """Bytes sent and median client-side time per request of 16 photos, the three ways, interleaved."""
    import tritonclient.http as triton

    from tests.live import running

    photos = [p.read_bytes() for p in sorted(CATALOGUE.glob("*.jpg"))][:16]
    lines = []
    with running(Settings(providers="cpu")) as url, httpx.Client(base_url=url, timeout=60) as http:
        client = triton.InferenceServerClient(url=url.removeprefix("http://"))

        def v2(binary: bool) -> tuple[Callable[[], object], int]:
            tensor = triton.InferInput("image", [len(photos)], "BYTES")
            data = photos if binary else [base64.b64encode(p) for p in photos]
            tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("article", "colour")]
            body, _ = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
            return lambda: client.infer("product-classifier", [tensor], outputs=outputs), len(body)

        files = [("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
        multipart = len(http.build_request("POST", "/classify", files=files).read())
        cases = {
            "v2 JSON (base64)": v2(False),
            "v2 binary extension": v2(True),
            "native multipart": ((lambda: http.post("/classify", files=files)), multipart),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for key, (run, _) in cases.items():
                started = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - started)
        jpeg = sum(map(len, photos))
        for key, (_, size) in cases.items():
            lines.append(
                f"{key}: {size} bytes for {len(photos)} photos ({jpeg} JPEG bytes), "
                f"median {1000 * float(np.median(times[key])):.1f} ms per request over {rounds}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.open_inference", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    one = steps.add_parser("prefix")
    one.add_argument("repository", type=Path)
    one.add_argument("name")
    one.add_argument("original", type=Path)
    two = steps.add_parser("payloads")
    two.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if args.step == "prefix":  # the Keras example: gray NHWC float32, x/255
        lines = [
            prefix(
                args.repository, args.name, args.original, InputSpec("NHWC", 28, "float32", "gray", (0.0,), (255.0,))
            )
        ]
    else:
        lines = payloads(args.rounds)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

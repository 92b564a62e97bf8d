"""Micro-benchmarks behind docs/performance.md: decode variants, and the model's cost by batch size.

    python -m bench.micro [--seconds 3]

1. Decode variants on real catalogue JPEGs, one thread, interleaved rounds: `app.preprocess.decode`
   as it is, the numpy padding it had before commit d33ed9a, and the Pillow padding without the
   EXIF check; all produce the same pixels (checked on every image used). Then the cumulative cost of
   the decode's stages: reading the header, decoding the pixels, scaling to the model size, padding.
2. The served model file in onnxruntime alone at batch 1 to 64, with 1 and 2 intra-op threads.
3. Decode + run in-process with one model thread of 2 intra-op threads and decoding pipelined on 2
   threads (the service's shape) against two workers that each decode and run their own batch on
   one intra-op thread (the naive peer's shape).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from itertools import cycle, islice

import numpy as np
from PIL import Image, ImageOps

from app.preprocess import decode, fit_and_pad, fitted_size, open_image, to_rgb
from app.repository import configured
from app.runtime import choose_precision
from app.schema import Preprocessing
from app.settings import Settings
from bench.ceilings import in_process, in_process_workers, onnxruntime_alone
from bench.images import load_jpegs


def decode_paste(data: bytes, spec: Preprocessing) -> np.ndarray:
    """The service's Pillow padding (`fit_and_pad`), with the EXIF transpose always applied."""
    opened = open_image(data, max_pixels=40_000_000)
    if opened.format == "JPEG":
        opened.draft("RGB", (spec.size, spec.size))
    image: Image.Image = ImageOps.exif_transpose(opened) or opened
    return fit_and_pad(to_rgb(image, spec.pad_colour), spec)


def decode_numpy_pad(data: bytes, spec: Preprocessing) -> np.ndarray:
    """The service's decode before commit d33ed9a: EXIF transpose always, pad by numpy fill + slice copy."""
    opened = open_image(data, max_pixels=40_000_000)
    if opened.format == "JPEG":
        opened.draft("RGB", (spec.size, spec.size))
    image: Image.Image = to_rgb(ImageOps.exif_transpose(opened) or opened, spec.pad_colour)
    size = spec.size
    width, height = image.size
    new_w, new_h = fitted_size(width, height, size)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = spec.pad_colour
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = np.asarray(image, dtype=np.uint8)
    return canvas


def decode_stages(jpegs: list[bytes], spec: Preprocessing, seconds: float) -> dict[str, float]:
    """Microseconds per image of the decode up to and including each stage (cumulative, one thread)."""

    def pixels(data: bytes) -> Image.Image:
        image = open_image(data, max_pixels=40_000_000)
        if image.format == "JPEG":
            image.draft("RGB", (spec.size, spec.size))
        image.load()
        return to_rgb(image, spec.pad_colour)

    def scaled(data: bytes) -> Image.Image:
        image = pixels(data)
        size = fitted_size(image.width, image.height, spec.size)
        return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)

    stages: dict[str, Callable[[bytes], object]] = {
        "header (open_image)": lambda data: open_image(data, max_pixels=40_000_000),
        "pixels (draft + load)": pixels,
        "scaled (bilinear resize)": scaled,
        "padded (app decode)": lambda data: decode(data, spec),
    }
    return {name: per_image_us(fn, jpegs, seconds / len(stages)) for name, fn in stages.items()}


def per_image_us(fn: Callable[[bytes], object], jpegs: list[bytes], seconds: float) -> float:
    """Microseconds per call of `fn` over the images, one thread."""
    for data in jpegs[:32]:
        fn(data)
    n, started = 0, time.perf_counter()
    for data in cycle(jpegs):
        fn(data)
        n += 1
        if n % 64 == 0 and time.perf_counter() - started >= seconds:
            break
    return (time.perf_counter() - started) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print each micro-benchmark's figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the decode variants")
    args = parser.parse_args(argv)
    jpegs, source = load_jpegs(args.images)
    version = configured(Settings())
    spec = version.metadata.preprocessing
    print(f"# {source}")
    variants: dict[str, Callable[[bytes, Preprocessing], np.ndarray]] = {
        "app.preprocess.decode": decode,
        "numpy pad, EXIF always (pre-d33ed9a)": decode_numpy_pad,
        "Pillow paste, EXIF always": decode_paste,
    }
    for data in jpegs:
        reference = decode(data, spec)
        for name, fn in variants.items():
            if not np.array_equal(fn(data, spec), reference):
                raise SystemExit(f"{name} differs from app.preprocess.decode")
    # Interleaved rounds, medians: single-thread timings on this VM drift by ±20 % within a minute.
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(per_image_us(_bind(fn, spec), jpegs, args.seconds / args.rounds))
    base = statistics.median(times["app.preprocess.decode"])
    for name, samples in times.items():
        us = statistics.median(samples)
        print(
            f"decode {name:32s} {us:7.1f} us/image  ({base / us:.2f}x)  rounds: "
            + " ".join(f"{t:.0f}" for t in samples)
        )
    for stage, us in decode_stages(jpegs, spec, args.seconds).items():
        print(f"decode up to {stage:26s} {us:7.1f} us/image")
    path = version.file_for(choose_precision(version, "auto", "cpu"))
    pixels = np.stack([decode(b, spec) for b in islice(cycle(jpegs), 64)])
    for threads in (1, 2):
        rates = [
            onnxruntime_alone(path, pixels[:n], threads=threads, duration_s=args.seconds)["images_per_s"]
            for n in (1, 4, 8, 16, 32, 64)
        ]
        print(
            f"onnxruntime alone, {threads} thread(s), batch 1/4/8/16/32/64: "
            + " / ".join(f"{r:.0f}" for r in rates)
            + " img/s"
        )
    for workers, threads, batch in ((1, 2, 32), (2, 1, 16), (2, 1, 32)):
        if threads == 1:
            result = in_process_workers(
                version, jpegs, precision="auto", workers=workers, batch=batch, duration_s=args.seconds
            )
        else:
            result = in_process(
                version,
                jpegs,
                precision="auto",
                threads=threads,
                decode_threads=2,
                batch=batch,
                duration_s=args.seconds,
                pipelined=True,
            )
        rate = float(result["images_per_s"])  # type: ignore[arg-type]
        print(
            f"in-process, batch {batch}: "
            + (
                "1 model thread x 2 intra-op threads, decode pipelined on 2 threads"
                if threads == 2
                else f"{workers} workers each decoding and running on 1 intra-op thread"
            )
            + f": {rate:.0f} img/s"
        )
    return 0


def _bind(fn: Callable[[bytes, Preprocessing], np.ndarray], spec: Preprocessing) -> Callable[[bytes], object]:
    return lambda data: fn(data, spec)


if __name__ == "__main__":
    raise SystemExit(main())

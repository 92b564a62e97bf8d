"""What explaining and the palette cost per image, against /classify's and /attributes' work, in one run.

    python -m bench.explain [--images 256] [--batch 8] [--rounds 5] [--threads 1] [--plain FILE]

On real catalogue JPEGs, in-process (the service's decode, onnxruntime session and answer shaping, without
HTTP, which costs the same for every endpoint and so would only bring the ratios closer to 1), interleaved
rounds of:

- classify: decode, run the heads and the embedding, shape the category answers;
- explain: decode, run the article head and its map, heat grid, heatmap PNG and base64 answer;
- attributes: decode, run, shape the attribute answers; then the same with the palette added (swatches in
  Lab, named with the learned shades and the colour head) and its names in Chinese;
- classify on the same model file without the map outputs (`--plain FILE`, e.g. the file before
  `vitrine export explainable`), to show that /classify pays nothing for them.

Each batch runs through every path in turn (the order rotating), so that other load on the host falls on
all of them alike. It prints the median per-image time of each (and the rounds' range) and the ratios:
explain / classify (goal at most 2) and attributes with palette / attributes (goal at most 1.15).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.answers import HeadView
from app.explain import Explainer
from app.palette import Namer, Shades, palette
from app.preprocess import decode
from app.repository import resolve
from app.runtime import Runtime, session_options
from app.schema import ModelMetadata
from app.translate import Labels, Translations
from bench.images import PRODUCTS, load_jpegs

ROOT = Path(__file__).resolve().parent.parent


def _decoded(jpegs: list[bytes], meta: ModelMetadata) -> np.ndarray:
    return np.stack([decode(j, meta.preprocessing) for j in jpegs])


def passes(runtime: Runtime, folder: Path, plain: Path | None, threads: int) -> dict[str, Callable[[list[bytes]], Any]]:
    """One callable per measured path, each doing a batch's work as the service would."""
    meta = runtime.metadata
    views = [HeadView(h) for h in meta.heads]
    attribute_views = [HeadView(h) for h in meta.attribute_heads]
    finest = HeadView(next(h for h in meta.heads if h.level == "article"))
    explainer = Explainer(meta)
    head = explainer.head(None)
    shades = Shades.read(folder)
    if shades is None:
        raise FileNotFoundError(f"{folder} has no palette.json: run `vitrine export palette` first")
    colour = next(h for h in meta.heads if h.name == shades.head)
    namer = Namer(shades, colour.labels)
    labels = Labels(meta, Translations.read(folder))

    def run(names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        return list(runtime.session.run(names, {meta.preprocessing.input_name: pixels}))

    def classify(jpegs: list[bytes]) -> Any:
        rows = runtime.run(_decoded(jpegs, meta))
        return [(finest.best(rows[finest.output][i]), finest.top(rows[finest.output][i], 5)) for i in range(len(jpegs))]

    def explain(jpegs: list[bytes]) -> Any:
        return [e.answer() for e in explainer.explain(run, _decoded(jpegs, meta), head, None)]

    def attributes(jpegs: list[bytes]) -> Any:
        rows = runtime.run(_decoded(jpegs, meta))
        return [{v.key: v.best(rows[v.output][i]) for v in attribute_views} for i in range(len(jpegs))]

    def attributes_palette(jpegs: list[bytes]) -> Any:
        pixels = _decoded(jpegs, meta)
        rows = runtime.run(pixels)
        out = []
        for i in range(len(jpegs)):
            answer: dict[str, Any] = {v.key: v.best(rows[v.output][i]) for v in attribute_views}
            named = palette(namer, pixels[i], rows[colour.output][i])
            answer["palette"] = [{**p, "name": labels.name("zh", colour.name, p["name"])} for p in named]
            out.append(answer)
        return out

    measured: dict[str, Callable[[list[bytes]], Any]] = {
        "classify": classify,
        "explain": explain,
        "attributes": attributes,
        "attributes+palette": attributes_palette,
    }
    if plain is not None:
        session = ort.InferenceSession(
            str(plain), session_options(threads, spinning=False), providers=["CPUExecutionProvider"]
        )
        names = [v.output for v in views] + ([meta.embedding_output] if meta.embedding_output else [])

        def classify_plain(jpegs: list[bytes]) -> Any:
            outputs = session.run(names, {meta.preprocessing.input_name: _decoded(jpegs, meta)})
            return [finest.best(outputs[names.index(finest.output)][i]) for i in range(len(jpegs))]

        measured["classify (file without maps)"] = classify_plain
    return measured


def main(argv: list[str] | None = None) -> int:
    """Measure and print the per-image times and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="product-classifier")
    parser.add_argument("--version", type=int, help="default: the highest")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--data", type=Path, default=PRODUCTS, help="catalogue folder with images-*.tar")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="images per request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--plain", type=Path, help="the same model file without the map outputs")
    args = parser.parse_args(argv)
    version = resolve(args.repository, args.model, args.version)
    runtime = Runtime(version, precision=args.precision, providers="cpu", intra_op_threads=args.threads, spinning=False)
    jpegs, source = load_jpegs(args.images, args.data)
    batches = [jpegs[i : i + args.batch] for i in range(0, len(jpegs), args.batch)]
    measured = passes(runtime, version.folder, args.plain, args.threads)
    for work in measured.values():  # warm-up: first runs allocate, and the explainer maps a blank input once
        work(batches[0])
    per_image: dict[str, list[float]] = {name: [] for name in measured}
    names = list(measured)
    for round_ in range(args.rounds):
        spent = dict.fromkeys(names, 0.0)
        # Every path runs each batch in turn (the order rotating), so that a burst of other load on the host
        # falls on all of them alike rather than on one path's whole pass.
        for index, batch in enumerate(batches):
            shift = (round_ + index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                measured[name](batch)
                spent[name] += time.perf_counter() - started
        for name in names:
            per_image[name].append(spent[name] / len(jpegs))
    print(
        f"{source}; {version.metadata.name} v{version.metadata.version} {runtime.precision}, "
        f"{args.threads} intra-op thread(s), {args.batch} images per call, median of {args.rounds} rounds"
    )
    medians = {name: statistics.median(times) for name, times in per_image.items()}
    for name, value in medians.items():
        spread = f"{min(per_image[name]) * 1000:.3f}-{max(per_image[name]) * 1000:.3f}"
        print(f"  {name:32s} {value * 1000:7.3f} ms per image (rounds {spread})")
    print(f"explain / classify: {medians['explain'] / medians['classify']:.2f} (goal at most 2)")
    print(
        f"attributes with palette / attributes: {medians['attributes+palette'] / medians['attributes']:.3f} "
        "(goal at most 1.15)"
    )
    if "classify (file without maps)" in medians:
        print(
            f"classify, file with maps / without: {medians['classify'] / medians['classify (file without maps)']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

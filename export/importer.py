"""`vitrine export import`: package any ONNX image classifier as a model version the service runs as it is.

The service feeds every model uint8 NHWC RGB pixels (fit-then-pad to a square) and applies a softmax to each
head's output. An imported graph takes whatever its framework exported (Keras NHWC float in [0, 1], PyTorch
NCHW ImageNet-normalised, grayscale, BGR, probabilities or logits), so a prefix is added in front of it that
turns the service's pixels into that input, and a log behind outputs that already are probabilities. A parity
run then compares the original file, fed by the same arithmetic in numpy, with the packaged one run by the
service's own runtime on images decoded by the service's own preprocessing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from app.errors import ModelLoadError
from app.preprocess import decode
from app.repository import ModelVersion
from app.runtime import Runtime, softmax
from app.schema import Imported, ModelMetadata, Preprocessing
from export.adapter import (
    PIXELS,
    HeadSpec,
    ImportProblem,
    InputSpec,
    check_outputs,
    is_probability_output,
    parse_input,
    wrap,
)
from export.pipeline import version_folder

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


@dataclass
class ParityResult:
    """How closely the packaged file, through the service's path, reproduces the original."""

    images: int
    max_abs_diff: float
    top1_agreement: float
    per_head: dict[str, float] = field(default_factory=dict)


def read_labels(path: Path) -> list[str]:
    """Labels from a text file (one per line, blank lines skipped) or a JSON list of strings."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ImportProblem(f"{path}: a JSON labels file holds a list of strings")
        return labels
    return [line.strip() for line in text.splitlines() if line.strip()]


def sample_images(folder: Path | None, count: int = 16, seed: int = 0) -> list[bytes]:
    """Encoded images for the parity run: those in `folder`, else generated PNGs of several sizes and colours."""
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if not files:
            raise ImportProblem(f"{folder}: no sample images")
        return [p.read_bytes() for p in files[:count]]
    rng = np.random.default_rng(seed)
    blobs = []
    for i in range(count):
        width, height = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[: height // 2] //= 1 + i % 3  # some structure, not only noise
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    return blobs


def parity(
    original: Path,
    version: ModelVersion,
    spec: InputSpec,
    heads: list[HeadSpec],
    scores: dict[str, str],
    images: list[bytes],
    *,
    tolerance: float,
) -> ParityResult:
    """Run the original on numpy-prepared input and the packaged file through the service (its decoding, its
    runtime and softmax) on the same images; ImportProblem when a probability differs by more than `tolerance`."""
    preprocessing = version.metadata.preprocessing
    pixels = np.stack([decode(blob, preprocessing) for blob in images])
    try:
        runtime = Runtime(version, precision="fp32", providers="cpu", intra_op_threads=1)
    except ModelLoadError as exc:  # labels that do not match an output's width, say
        raise ImportProblem(f"the service would refuse the packaged model: {exc.message}") from exc
    try:
        served = runtime.run(pixels)
    except Exception as exc:  # a graph that bakes in batch size 1 fails here, with more than one image
        raise ImportProblem(
            f"the packaged model does not run on a batch of {len(pixels)} images ({str(exc).splitlines()[0]}); "
            "re-export it with a dynamic batch axis"
        ) from exc
    session = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    reference = spec.reference(pixels)
    try:
        expected = session.run([h.output for h in heads], {input_name: reference})
    except Exception:  # a fixed batch of 1 in the original: one image at a time
        rows = [session.run([h.output for h in heads], {input_name: reference[i : i + 1]}) for i in range(len(pixels))]
        expected = [np.concatenate([r[k] for r in rows]) for k in range(len(heads))]
    per_head: dict[str, float] = {}
    agree = []
    by_output = {h.output: h for h in version.metadata.heads}
    for head, want in zip(heads, expected, strict=True):
        want = np.asarray(want, np.float32)
        if scores[head.output] == "logits":
            want = softmax(want)
        got = served[by_output[_packaged_name(version, head)].output]
        per_head[head.key] = float(np.abs(got - want).max())
        agree.append(float((got.argmax(1) == want.argmax(1)).mean()))
    result = ParityResult(len(images), max(per_head.values()), min(agree), per_head)
    if result.max_abs_diff > tolerance:
        raise ImportProblem(
            f"parity failed: the packaged model's probabilities differ from the original's by up to "
            f"{result.max_abs_diff:.2e} (tolerance {tolerance:g}): check --input"
        )
    return result


def _packaged_name(version: ModelVersion, head: HeadSpec) -> str:
    return next(h.output for h in version.metadata.heads if h.key == head.key)


def import_model(
    source: Path,
    heads: list[HeadSpec],
    input_text: str,
    *,
    repository: Path,
    name: str,
    version: int | None = None,
    overwrite: bool = False,
    scores: str = "auto",
    pad_colour: tuple[int, int, int] = (255, 255, 255),
    samples: Path | None = None,
    tolerance: float = 1e-4,
) -> tuple[Path, ModelMetadata]:
    """Package `source` as `repository/name/<version>/` (model.onnx, model.json) after a parity run."""
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is not a model
        raise ImportProblem(f"{source}: not a readable ONNX model ({str(exc).splitlines()[0]})") from exc
    # Old exporters list initializers among the inputs too: the image is the one input that is not one.
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ImportProblem(f"the model has {len(inputs)} inputs ({[i.name for i in inputs]}); one image input needed")
    del model.graph.input[:]
    model.graph.input.append(inputs[0])
    spec = parse_input(input_text, inputs[0])
    check_outputs(model, heads)
    if scores == "auto":
        kinds = {h.output: "probabilities" if is_probability_output(model, h.output) else "logits" for h in heads}
    else:
        kinds = {h.output: scores for h in heads}
    packaged, names = wrap(model, spec, heads, kinds)
    preprocessing = Preprocessing(
        input_name=PIXELS,
        size=spec.size,
        pad_colour=pad_colour,
        # One number each here (the card and distillation read them); per-channel values are in `imported`.
        mean=float(np.mean(spec.mean)),
        std=float(np.mean(spec.std)),
    )
    imported = Imported(
        source=source.name,
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        input_name=inputs[0].name,
        layout=spec.layout,
        dtype=spec.dtype,
        channels=spec.channels,
        mean=list(spec.mean),
        std=list(spec.std),
        scores="probabilities" if set(kinds.values()) == {"probabilities"} else "logits",
    )
    model_dir = repository / name
    with version_folder(model_dir, version, overwrite=overwrite) as (folder, number):
        onnx.save(packaged, str(folder / MODEL_FILE))
        meta = ModelMetadata(
            name=name,
            version=number,
            architecture=f"imported:{source.name}",
            preprocessing=preprocessing,
            heads=[h.head(names[h.output]) for h in heads],
            embedding_output=None,
            files={"fp32": MODEL_FILE},
            imported=imported,
        )
        meta.write(folder)
        result = parity(
            source, ModelVersion(folder, meta), spec, heads, kinds, sample_images(samples), tolerance=tolerance
        )
        meta.imported = imported.model_copy(
            update={
                "parity": {
                    "images": float(result.images),
                    "max_abs_probability_diff": result.max_abs_diff,
                    "top1_agreement": result.top1_agreement,
                }
            }
        )
        meta.write(folder)
    log.info(
        "imported %s as %s v%d: parity on %d images, largest probability difference %.2e, top-1 agreement %.3f",
        source,
        name,
        number,
        result.images,
        result.max_abs_diff,
        result.top1_agreement,
    )
    return model_dir / str(number), meta


def add_import_parser(steps: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `import` step's options."""
    step = steps.add_parser(
        "import",
        help="package an ONNX image classifier (Keras, TensorFlow, PyTorch) as a model version, after a parity run",
    )
    step.add_argument("model", type=Path, help="the ONNX file")
    step.add_argument(
        "--labels",
        action="append",
        required=True,
        metavar="[OUTPUT=]FILE",
        help="labels of an output, one per line (or a JSON list), in the output's order; repeat per output",
    )
    step.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="[OUTPUT=]KEY",
        help="the API key of an output: article, sub or master make it a category level (/classify), any other "
        "key an attribute (/attributes); default article for a single output",
    )
    step.add_argument(
        "--input",
        required=True,
        help="how the graph sees pixels, comma-separated: normalisation (raw, unit = x/255, symmetric = "
        "x/127.5-1, imagenet, or mean=a:b:c,std=a:b:c in 0-255 units), and where the graph does not say: "
        "NHWC|NCHW, rgb|bgr|gray",
    )
    step.add_argument("--name", help="model name (default: the file's stem)")
    step.add_argument("--repository", type=Path, default=Path("models"), help="model repository (default models)")
    step.add_argument("--version", type=int, help="version number (default: next free)")
    step.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    step.add_argument(
        "--scores",
        choices=["auto", "logits", "probabilities"],
        default="auto",
        help="what the outputs give (auto: probabilities when a Softmax node makes them)",
    )
    step.add_argument("--pad-colour", default="255,255,255", help="R,G,B canvas for non-square photos")
    step.add_argument("--samples", type=Path, help="folder of images for the parity run (default generated)")
    step.add_argument("--tolerance", type=float, default=1e-4, help="largest probability difference allowed")


def _pairs(values: list[str], what: str) -> dict[str | None, str]:
    """`OUTPUT=VALUE` or `VALUE` options as {output or None: value}."""
    pairs: dict[str | None, str] = {}
    for value in values:
        output, sep, rest = value.rpartition("=")
        key = output if sep else None
        if key in pairs:
            raise ImportProblem(f"{what} given twice for {key or 'the output'}")
        pairs[key] = rest
    return pairs


def run_import(args: argparse.Namespace) -> None:
    """`vitrine export import`: read the options, package the model, report the parity run."""
    model = onnx.load(str(args.model), load_external_data=False) if args.model.is_file() else None
    if model is None:
        raise FileNotFoundError(f"{args.model}: no such file")
    outputs = [o.name for o in model.graph.output]
    labels = _pairs(args.labels, "--labels")
    keys = _pairs(args.head, "--head")
    if None in labels:
        if len(labels) > 1 or len(outputs) != 1:
            raise ImportProblem(f"the model has outputs {outputs}: give --labels OUTPUT=FILE for each one to serve")
        labels = {outputs[0]: labels[None]}
    if None in keys:
        if len(labels) != 1:
            raise ImportProblem("with several outputs give --head OUTPUT=KEY for each")
        keys = {next(iter(labels)): keys[None]}
    unknown = set(keys) - set(labels)
    if unknown:
        raise ImportProblem(f"--head names outputs without --labels: {sorted(str(k) for k in unknown)}")
    if len(labels) > 1 and set(keys) != set(labels):
        raise ImportProblem("with several outputs give --head OUTPUT=KEY for each")
    heads = [
        HeadSpec(str(output), keys.get(output, "article"), read_labels(Path(path))) for output, path in labels.items()
    ]
    try:
        colour = tuple(int(c) for c in args.pad_colour.split(","))
    except ValueError:
        colour = ()
    if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
        raise ImportProblem(f"--pad-colour {args.pad_colour!r}: give R,G,B from 0 to 255")
    folder, meta = import_model(
        args.model,
        heads,
        args.input,
        repository=args.repository,
        name=args.name or args.model.stem,
        version=args.version,
        overwrite=args.overwrite,
        scores=args.scores,
        pad_colour=(colour[0], colour[1], colour[2]),
        samples=args.samples,
        tolerance=args.tolerance,
    )
    log.info("wrote %s: serve it with VITRINE_MODEL_NAME=%s (and VITRINE_MODEL_REPOSITORY)", folder, meta.name)

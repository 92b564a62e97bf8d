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
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from app.errors import ModelLoadError
from app.preprocess import decode
from app.repository import ModelVersion
from app.runtime import Runtime, softmax
from app.schema import Head, Imported, ModelMetadata, Preprocessing
from export.pipeline import version_folder

log = logging.getLogger(__name__)

PIXELS = "pixels"
MODEL_FILE = "model.onnx"
CATEGORY_LEVELS = ("article", "sub", "master")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's convert("L")
PRESETS = {  # normalisations in 0-255 pixel units: (mean, std) per channel, RGB order
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    "symmetric": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}
DTYPES: dict[int, str] = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.UINT8: "uint8"}
PROBABILITY_EPS = 1e-12  # log(0) would be -inf; below this a class is as good as impossible anyway


class ImportProblem(ValueError):
    """The file cannot be packaged as given; the message says what to change."""


@dataclass(frozen=True)
class InputSpec:
    """How the service's pixels become the original graph's input."""

    layout: Literal["NHWC", "NCHW"]
    size: int
    dtype: Literal["float32", "float16", "uint8"]
    channels: Literal["RGB", "BGR", "gray"]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def reference(self, pixels: np.ndarray) -> np.ndarray:
        """The original graph's input for a uint8 NHWC RGB batch, computed in numpy (the parity reference)."""
        x: np.ndarray = pixels.astype(np.float32)
        if self.channels == "gray":
            x = np.matmul(x, np.array(LUMA, np.float32)[:, None])
        elif self.channels == "BGR":
            x = x[..., ::-1]
        x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        if self.dtype == "uint8":
            return np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x.astype(self.dtype))


@dataclass(frozen=True)
class HeadSpec:
    """One output of the original graph to serve as a head."""

    output: str
    key: str
    labels: list[str]

    def head(self, packaged_output: str) -> Head:
        """The head as model.json declares it: article, sub and master are category levels, others attributes."""
        if self.key in CATEGORY_LEVELS:
            level = cast(Literal["master", "sub", "article"], self.key)
            return Head(
                name=self.key, output=packaged_output, key=self.key, role="category", level=level, labels=self.labels
            )
        return Head(name=self.key, output=packaged_output, key=self.key, role="attribute", labels=self.labels)


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


def parse_input(text: str, graph_input: onnx.ValueInfoProto) -> InputSpec:
    """The `--input` spec (comma-separated: NHWC|NCHW, rgb|bgr|gray, a normalisation preset or mean=a:b:c and
    std=a:b:c in 0-255 units); layout, size, channels and dtype not given are read from the graph's input."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    layout: str | None = None
    channels: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    for token in tokens:
        lower = token.lower()
        if token.upper() in ("NHWC", "NCHW"):
            layout = token.upper()
        elif lower in ("rgb", "bgr", "gray", "grey"):
            channels = "gray" if lower == "grey" else lower.upper() if lower != "gray" else "gray"
        elif lower in PRESETS:
            mean, std = PRESETS[lower]
        elif lower.startswith(("mean=", "std=")):
            name, _, values = lower.partition("=")
            try:
                numbers = tuple(float(v) for v in values.split(":"))
            except ValueError:
                raise ImportProblem(f"--input {token!r}: give numbers separated by ':'") from None
            if name == "mean":
                mean = numbers
            else:
                std = numbers
        else:
            raise ImportProblem(
                f"--input: unknown token {token!r} (layout NHWC|NCHW, channels rgb|bgr|gray, normalisation "
                f"{'|'.join(PRESETS)} or mean=a:b:c,std=a:b:c)"
            )
    if mean is None or std is None:
        raise ImportProblem(
            "--input must say how the model was trained to see pixels: one of "
            f"{', '.join(PRESETS)} (e.g. unit for Keras' x/255), or mean=a:b:c,std=a:b:c in 0-255 units"
        )
    dims = graph_shape(graph_input)
    layout = layout or guess_layout(dims)
    width = dims[3] if layout == "NHWC" else dims[1]
    height, side = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    if not all(isinstance(d, int) for d in (width, height, side)):
        raise ImportProblem(f"input {graph_input.name!r} has shape {dims}: a fixed size and channel count is needed")
    if height != side:
        raise ImportProblem(f"input {graph_input.name!r} is {height}x{side}: only square inputs can be served")
    if width not in (1, 3):
        raise ImportProblem(f"input {graph_input.name!r} has {width} channels in layout {layout}: 1 or 3 expected")
    channels = channels or ("gray" if width == 1 else "RGB")
    if (channels == "gray") != (width == 1):
        raise ImportProblem(f"--input says {channels} but the graph's input has {width} channel(s)")
    count = 1 if channels == "gray" else 3
    mean, std = _per_channel(mean, count, "mean"), _per_channel(std, count, "std")
    if any(s == 0 for s in std):
        raise ImportProblem("--input: std must not be 0")
    elem = graph_input.type.tensor_type.elem_type
    if elem not in DTYPES:
        raise ImportProblem(f"input {graph_input.name!r} has element type {TensorProto.DataType.Name(elem)}")
    return InputSpec(layout, int(height), DTYPES[elem], channels, mean, std)  # type: ignore[arg-type]


def _per_channel(values: tuple[float, ...], count: int, name: str) -> tuple[float, ...]:
    if len(values) == count:
        return values
    if len(values) == 1 or len(set(values)) == 1:
        return (values[0],) * count
    raise ImportProblem(f"--input: {name} has {len(values)} values for {count} channel(s)")


def graph_shape(value: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input's or output's dimensions: ints where fixed, names (or '?') where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def guess_layout(dims: list[int | str]) -> str:
    """NHWC when the last dimension holds 1 or 3 channels and the second does not, else NCHW."""
    if len(dims) != 4:
        raise ImportProblem(f"the model's input has shape {dims}; an image classifier takes [batch, ...] of rank 4")
    if dims[3] in (1, 3) and dims[1] not in (1, 3):
        return "NHWC"
    if dims[1] in (1, 3):
        return "NCHW"
    raise ImportProblem(f"cannot tell the layout of input shape {dims}: add NHWC or NCHW to --input")


def is_probability_output(model: onnx.ModelProto, output: str) -> bool:
    """True when the output is produced by a Softmax node (Keras' Dense(..., softmax), a torch softmax)."""
    producer = next((n for n in model.graph.node if output in n.output), None)
    return producer is not None and producer.op_type == "Softmax"


def _prefix_nodes(spec: InputSpec, target: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from uint8 NHWC RGB `pixels` to the original input `target`: the arithmetic of `reference`."""
    nodes = [helper.make_node("Cast", [PIXELS], ["vitrine_x"], to=TensorProto.FLOAT)]
    inits = []
    current = "vitrine_x"
    if spec.channels == "gray":
        inits.append(numpy_helper.from_array(np.array(LUMA, np.float32)[:, None], "vitrine_luma"))
        nodes.append(helper.make_node("MatMul", [current, "vitrine_luma"], ["vitrine_gray"]))
        current = "vitrine_gray"
    elif spec.channels == "BGR":
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "vitrine_bgr"))
        nodes.append(helper.make_node("Gather", [current, "vitrine_bgr"], ["vitrine_swapped"], axis=3))
        current = "vitrine_swapped"
    inits.append(numpy_helper.from_array(np.array(spec.mean, np.float32), "vitrine_mean"))
    inits.append(numpy_helper.from_array(np.array(spec.std, np.float32), "vitrine_std"))
    nodes.append(helper.make_node("Sub", [current, "vitrine_mean"], ["vitrine_centred"]))
    nodes.append(helper.make_node("Div", ["vitrine_centred", "vitrine_std"], ["vitrine_normalised"]))
    current = "vitrine_normalised"
    if spec.layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [current], ["vitrine_nchw"], perm=[0, 3, 1, 2]))
        current = "vitrine_nchw"
    if spec.dtype == "uint8":
        nodes.append(helper.make_node("Round", [current], ["vitrine_rounded"]))
        nodes.append(helper.make_node("Clip", ["vitrine_rounded", "vitrine_lo", "vitrine_hi"], ["vitrine_clipped"]))
        inits += [
            numpy_helper.from_array(np.array(0, np.float32), "vitrine_lo"),
            numpy_helper.from_array(np.array(255, np.float32), "vitrine_hi"),
        ]
        nodes.append(helper.make_node("Cast", ["vitrine_clipped"], [target], to=TensorProto.UINT8))
    else:
        to = TensorProto.FLOAT16 if spec.dtype == "float16" else TensorProto.FLOAT
        nodes.append(helper.make_node("Cast", [current], [target], to=to))
    return nodes, inits


def wrap(
    model: onnx.ModelProto, spec: InputSpec, heads: list[HeadSpec], scores: dict[str, str]
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The packaged graph: the prefix, the original graph, one output per head (probabilities through a log).

    Returns it with the packaged output name of each head's original output."""
    graph = model.graph
    original = graph.input[0]
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    prefix, inits = _prefix_nodes(spec, original.name)
    tail: list[onnx.NodeProto] = []
    outputs = []
    names: dict[str, str] = {}
    for head in heads:
        name = head.key if head.key not in taken else f"vitrine_{head.key}"
        names[head.output] = name
        if scores[head.output] == "probabilities":
            floor = f"vitrine_eps_{head.key}"
            inits.append(numpy_helper.from_array(np.array(PROBABILITY_EPS, np.float32), floor))
            tail.append(helper.make_node("Max", [head.output, floor], [f"vitrine_floor_{head.key}"]))
            tail.append(helper.make_node("Log", [f"vitrine_floor_{head.key}"], [name]))
        else:
            tail.append(helper.make_node("Identity", [head.output], [name]))
        declared = next(o for o in graph.output if o.name == head.output)
        width = graph_shape(declared)[-1] if graph_shape(declared) else "classes"
        # The original's own width, not the labels' count: the runtime's signature check compares the two.
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width]))
    new_graph = helper.make_graph(
        [*prefix, *graph.node, *tail],
        graph.name or "imported",
        [helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, ["batch", spec.size, spec.size, 3])],
        outputs,
        [*inits, *graph.initializer],
        value_info=list(graph.value_info),
    )
    new_graph.sparse_initializer.extend(graph.sparse_initializer)
    packaged = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name="vitrine-import")
    packaged.ir_version = model.ir_version
    packaged.functions.extend(model.functions)
    onnx.checker.check_model(packaged, full_check=False)
    return packaged, names


def check_outputs(model: onnx.ModelProto, heads: list[HeadSpec]) -> None:
    """Every head names an output of the graph; ImportProblem otherwise."""
    available = [o.name for o in model.graph.output]
    for head in heads:
        if head.output not in available:
            raise ImportProblem(f"the model has no output {head.output!r} (outputs: {available})")
    keys = [h.key for h in heads]
    if len(set(keys)) != len(keys):
        raise ImportProblem(f"head keys must be unique, got {keys}")


def sample_images(folder: Path | None, count: int = 16, seed: int = 0) -> list[bytes]:
    """Encoded images for the parity run: those in `folder`, else generated PNGs of several sizes and colours."""
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if not files:
            raise ImportProblem(f"{folder}: no sample images")
        return [p.read_bytes() for p in files[:count]]
    import io

    from PIL import Image

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
    assert meta.imported is not None
    log.info("wrote %s: serve it with VITRINE_MODEL_NAME=%s (and VITRINE_MODEL_REPOSITORY)", folder, meta.name)

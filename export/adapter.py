"""The prefix that lets the service run a foreign image classifier: its input spec, and the wrapped graph.

The service feeds every model uint8 NHWC RGB pixels and applies a softmax to each head's output. The prefix
turns those pixels into what the original graph takes (layout, gray or BGR, element type, normalisation),
and a log behind outputs that already are probabilities lets the service's softmax give them back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.schema import Head

PIXELS = "pixels"
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

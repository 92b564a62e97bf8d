"""`vitrine export explainable`: add class activation map outputs to a model folder's ONNX files.

A head that is a linear layer over globally averaged feature maps is explained exactly by its class
activation map: logit_c = mean over cells of (W_c . F_cell) + b_c. For each head the step finds, in each
ensemble member, the linear layer (Gemm or MatMul) that reads the pooled feature maps, and adds the output
`explain/<head>`: the members' maps (scaled as the member scales its logits, by its temperature) averaged,
float32, shaped (batch, rows, columns, labels). onnxruntime computes only the outputs a run asks for, so the
answers that do not ask for these pay nothing. It works from the graph and `model.json` alone, and refuses,
naming the head, a graph whose head is not such a layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from app.schema import ONNX_METADATA_KEY, ExplainOutputs, ModelMetadata
from export.convert import set_metadata_props

log = logging.getLogger(__name__)

PREFIX = "explain/"
# Ops between the pooling and the linear layer that only reshape the pooled vector.
RESHAPING = frozenset({"Reshape", "Flatten", "Squeeze", "Gather", "Identity", "Cast"})
# Ops after the linear layer that scale the logits (a temperature) and are applied to the map as well; an added
# bias or a cast passes through (a bias shifts every cell alike, and the maps are cast to float32 at the end).
SCALING = frozenset({"Div", "Mul"})
PASSING = frozenset({"Add", "Cast"})
MAX_FILE_BYTES = 20_000_000  # a model file committed to the repository stays under this
CHECK_TOLERANCE = 1e-3  # relative: the maps' cell mean must give each member's logits up to a constant per label


class NotExplainable(ValueError):
    """The graph has no linear head over pooled feature maps where the step looks for one."""


@dataclass(frozen=True)
class Member:
    """One member's linear layer for a head: the feature maps it pools and what turns them into its logits."""

    features: str  # NCHW feature maps before the global average pooling
    weight: str  # the layer's weight tensor
    transposed: bool  # weight stored (labels, channels), as Gemm with transB=1 has it
    alpha: float
    scales: tuple[tuple[str, str], ...]  # (op, other operand) applied to its logits after the layer
    logits: str  # the member's scaled logits (the last scaling's output): what the check compares against


def explain_output(head: str) -> str:
    """The name of a head's class activation map output."""
    return f"{PREFIX}{head}"


def make_explainable(folder: Path, *, check_images: int = 4) -> ModelMetadata:
    """Add the class activation map outputs to every ONNX file of a version folder, check them, record them in
    its `model.json`, and return the new metadata."""
    meta = ModelMetadata.read(folder)
    if not meta.files:
        raise NotExplainable(f"{folder}/model.json lists no model files")
    outputs = {h.name: explain_output(h.name) for h in meta.heads}
    staged: list[tuple[Path, Path]] = []
    geometry: set[tuple[float, float]] = set()
    try:
        for precision, name in meta.files.items():
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the {precision} file model.json lists is missing")
            model = onnx.load(str(path), load_external_data=False)
            members = add_maps(model, meta)
            first_centre = _first_centre(model.graph, {m.features for ms in members.values() for m in ms})
            staging = path.with_name(path.name + ".explainable")
            staged.append((staging, path))
            onnx.save(model, str(staging))  # external data (an ensemble's fp32 weights) stays, by reference
            rows = check_maps(staging, meta, members, check_images)
            geometry.add((meta.preprocessing.size / rows, first_centre))
        if len(geometry) != 1:
            raise NotExplainable(f"the model files' maps lie differently on the input: {sorted(geometry)}")
        cell, first = geometry.pop()
        updated = meta.model_copy(
            update={"explain": ExplainOutputs(outputs=outputs, cell_px=cell, first_centre_px=first)}
        )
        for staging, path in staged:
            model = onnx.load(str(staging), load_external_data=False)
            set_metadata_props(model, {ONNX_METADATA_KEY: updated.model_dump_json()})
            onnx.save(model, str(path))
            staging.unlink()
    finally:
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
    for _, path in staged:
        size = path.stat().st_size
        if size >= MAX_FILE_BYTES:
            log.warning("%s is %.1f MB, not under %.0f MB", path, size / 1e6, MAX_FILE_BYTES / 1e6)
        log.info("%s: class activation maps for %d heads (%.1f MB)", path, len(outputs), size / 1e6)
    updated.write(folder)
    return updated


def add_maps(model: onnx.ModelProto, meta: ModelMetadata) -> dict[str, list[Member]]:
    """Add (or replace) one map output per head in `model`; return each head's members."""
    graph = model.graph
    _drop_previous(graph)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _constants(graph)
    found: dict[str, list[Member]] = {}
    for head in meta.heads:
        members = _members(head.output, head.name, producers, consumers, constants)
        _append_head(graph, head.name, members)
        found[head.name] = members
    return found


def check_maps(path: Path, meta: ModelMetadata, members: dict[str, list[Member]], images: int) -> int:
    """Run the file on varied images: each member's map, averaged over its cells, must equal its logits up to a
    constant per label (its bias), which is what makes the map exact; raise NotExplainable otherwise. Return
    the maps' rows (as many as columns)."""
    model = onnx.load(str(path), load_external_data=False)
    wanted: list[str] = [explain_output(h.name) for h in meta.heads]
    for head in meta.heads:
        for index, member in enumerate(members[head.name]):
            wanted += [_member_map(head.name, index), member.logits]
    existing = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in existing:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    checking = path.with_name(path.name + ".check")
    onnx.save(model, str(checking))
    try:
        session = ort.InferenceSession(str(checking), providers=["CPUExecutionProvider"])
        spec = meta.preprocessing
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (images, spec.size, spec.size, 3), dtype=np.uint8)
        pixels[0] = 255  # a white image among the noise: the catalogue's background
        values = dict(zip(wanted, session.run(wanted, {spec.input_name: pixels}), strict=True))
    finally:
        checking.unlink()
    for head in meta.heads:
        for index, member in enumerate(members[head.name]):
            maps = values[_member_map(head.name, index)].astype(np.float64)
            logits = values[member.logits].astype(np.float64).reshape(images, -1)
            offset = logits - maps.mean(axis=(1, 2))  # per image and label: must not depend on the image
            spread = float(np.abs(offset - offset[:1]).max())
            if spread > CHECK_TOLERANCE * max(1.0, float(np.abs(logits).max())):
                raise NotExplainable(
                    f"{path.name}: head {head.name}: the map of member {index} does not average to its logits "
                    f"(off by up to {spread:.4g}): the layer is not linear over the pooled maps"
                )
    shapes = {values[explain_output(h.name)].shape[1:3] for h in meta.heads}
    if len(shapes) != 1 or len({*shapes.pop()}) != 1:
        raise NotExplainable(f"{path.name}: the maps are not one square grid for every head and member")
    return int(values[explain_output(meta.heads[0].name)].shape[1])


def _first_centre(graph: onnx.GraphProto, features: set[str]) -> float:
    """The input pixel on which the maps' cell (0, 0) is centred, from the convolutions' and poolings' kernels,
    strides and padding on the way from the input to the feature maps (0 for symmetric padding, where cell i of
    a stride-s map is centred on pixel s * i; more for TensorFlow's "same" padding, which pads the end more)."""
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    jump: dict[str, float] = {i.name: 1.0 for i in graph.input}
    offset: dict[str, float] = {i.name: 0.0 for i in graph.input}
    for node in graph.node:  # in topological order: each tensor takes the geometry of its first spatial input
        source = next((i for i in node.input if i in jump), None)
        if source is None:
            continue
        step, start = jump[source], offset[source]
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            kernel = attributes.get("kernel_shape") or shapes.get(node.input[1], [0, 0, 1, 1])[2:]
            stride = (attributes.get("strides") or [1])[0]
            dilation = (attributes.get("dilations") or [1])[0]
            reach = (int(kernel[0]) - 1) * int(dilation) + 1
            auto_pad = attributes.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                total = max(reach - int(stride), 0)
                begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            elif auto_pad == "VALID":
                begin = 0
            else:
                begin = int((attributes.get("pads") or [0])[0])
            start += step * ((reach - 1) / 2 - begin)
            step *= int(stride)
        for out in node.output:
            jump[out], offset[out] = step, start
    centres = {offset[f] for f in features if f in offset}
    if len(centres) != 1:
        raise NotExplainable(f"the feature maps' cells cannot be placed on the input (centres {sorted(centres)})")
    return centres.pop()


def _drop_previous(graph: onnx.GraphProto) -> None:
    """Remove the outputs and nodes an earlier run added, so the step can run again."""
    kept = [n for n in graph.node if not n.name.startswith(PREFIX)]
    del graph.node[:]
    graph.node.extend(kept)
    outputs = [o for o in graph.output if not o.name.startswith(PREFIX)]
    del graph.output[:]
    graph.output.extend(outputs)
    initializers = [i for i in graph.initializer if not i.name.startswith(PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values (without external data, which holds only large weights)."""
    values: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            values[tensor.name] = numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _members(
    output: str,
    head: str,
    producers: dict[str, onnx.NodeProto],
    consumers: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
) -> list[Member]:
    """The linear layers over pooled maps that feed `output`, one per member, found walking the graph back."""
    members: list[Member] = []
    skipped: list[str] = []
    seen: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or node.output[0] in seen:  # node names may be empty: its first output names it
            continue
        seen.add(node.output[0])
        if node.op_type in ("Gemm", "MatMul"):
            features = _pooled(node.input[0], producers, constants)
            if features is None:
                # Not a head's layer: a memory vote's similarity to stored photos, blended into some heads. Its
                # share of the answer has no map; what lies behind it is the embedding, not a head.
                skipped.append(node.name or node.output[0])
            else:
                members.append(_member(node, features, consumers))
            continue  # what lies before a member's linear layer is its backbone
        stack.extend(i for i in node.input if i)
    if not members:
        raise NotExplainable(
            f"head {head}: no linear layer over globally pooled feature maps feeds output {output!r}; only such a "
            "head can be explained exactly by its class activation map"
        )
    if skipped:
        log.info("head %s: the map leaves out %s, which read(s) no pooled maps (a memory vote)", head, skipped)
    return sorted(members, key=lambda m: m.weight)


def _pooled(name: str, producers: dict[str, onnx.NodeProto], constants: dict[str, np.ndarray]) -> str | None:
    """The NCHW feature maps whose global average `name` is (through reshaping ops only), or None."""
    node = producers.get(name)
    while node is not None and node.op_type in RESHAPING:
        node = producers.get(node.input[0])
    if node is None:
        return None
    if node.op_type == "GlobalAveragePool":
        return str(node.input[0])
    if node.op_type != "ReduceMean":
        return None
    axes: list[int] | None = None
    if len(node.input) > 1 and node.input[1] in constants:
        axes = [int(a) for a in constants[node.input[1]].ravel()]
    for attribute in node.attribute:
        if attribute.name == "axes":
            axes = list(attribute.ints)
    return node.input[0] if axes is not None and sorted(a % 4 for a in axes) == [2, 3] else None


def _member(layer: onnx.NodeProto, features: str, consumers: dict[str, list[onnx.NodeProto]]) -> Member:
    """The member of `layer`, with the scalings its logits go through before the ensemble combines them."""
    attributes = {a.name: helper.get_attribute_value(a) for a in layer.attribute}
    if attributes.get("transA", 0):
        raise NotExplainable(f"{layer.name!r}: a Gemm with transA is not a head over pooled features")
    transposed = layer.op_type == "Gemm" and bool(attributes.get("transB", 0))
    alpha = float(attributes.get("alpha", 1.0)) if layer.op_type == "Gemm" else 1.0
    scales: list[tuple[str, str]] = []
    current = layer.output[0]
    while len(following := consumers.get(current, [])) == 1 and following[0].op_type in SCALING | PASSING:
        node = following[0]
        if node.op_type in SCALING:
            if node.op_type == "Div" and node.input[0] != current:
                break  # x / logits is not a scaling of the logits
            scales.append((node.op_type, node.input[1] if node.input[0] == current else node.input[0]))
        current = node.output[0]
    return Member(features, layer.input[1], transposed, alpha, tuple(scales), current)


def _member_map(head: str, index: int) -> str:
    return f"{PREFIX}{head}/m{index}"


def _append_head(graph: onnx.GraphProto, head: str, members: list[Member]) -> None:
    """Nodes computing each member's map, their mean, and the head's output."""
    nodes: list[onnx.NodeProto] = []
    maps = []
    for index, member in enumerate(members):
        base = _member_map(head, index)
        cells = f"{base}/cells"  # (batch, rows, columns, channels)
        nodes.append(helper.make_node("Transpose", [member.features], [cells], name=cells, perm=[0, 2, 3, 1]))
        weight = member.weight
        if member.transposed:
            weight = f"{base}/weight"
            nodes.append(helper.make_node("Transpose", [member.weight], [weight], name=weight, perm=[1, 0]))
        current = f"{base}/raw"
        nodes.append(helper.make_node("MatMul", [cells, weight], [current], name=current))
        for step, (op, operand) in enumerate(member.scales):
            scaled = f"{base}/scale{step}"
            nodes.append(helper.make_node(op, [current, operand], [scaled], name=scaled))
            current = scaled
        cast = base if member.alpha == 1.0 else f"{base}/float"
        nodes.append(helper.make_node("Cast", [current], [cast], name=cast, to=onnx.TensorProto.FLOAT))
        if member.alpha != 1.0:  # Gemm's alpha scales the product, hence the map
            alpha = f"{base}/alpha"
            graph.initializer.append(numpy_helper.from_array(np.array(member.alpha, dtype=np.float32), alpha))
            nodes.append(helper.make_node("Mul", [cast, alpha], [base], name=base))
        maps.append(base)
    output = explain_output(head)
    share = f"{output}/share"
    graph.initializer.append(numpy_helper.from_array(np.array(1 / len(members), dtype=np.float32), share))
    total = f"{output}/sum"
    nodes.append(helper.make_node("Sum", maps, [total], name=total))
    nodes.append(helper.make_node("Mul", [total, share], [output], name=output))
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))

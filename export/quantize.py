"""INT8 (static, QDQ) and FP16 variants of an exported FP32 ONNX model, and a CPU throughput helper."""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from export.convert import check_pixels, cpu_session, metadata_props, set_metadata_props

log = logging.getLogger(__name__)

Calibration = Literal["minmax", "percentile"]
_CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}


class PixelCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds uint8 NHWC calibration pixels to the quantiser in batches under the model's input name."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int = 16) -> None:
        self.input_name = input_name
        self.pixels = pixels
        self.batch_size = batch_size
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration batch, or None when all pixels were fed."""
        if self._start >= len(self.pixels):
            return None
        batch = np.ascontiguousarray(self.pixels[self._start : self._start + self.batch_size])
        self._start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._start = 0


def _input_name(path: Path) -> str:
    model = onnx.load(str(path), load_external_data=False)
    initialisers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one graph input, found {inputs}")
    return str(inputs[0])


def after_features(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes downstream of the pooled features: the heads, the embedding and what follows them.

    The features are the tensor most Gemm/MatMul nodes read (every head reads it). Downstream of it there
    is little compute but a lot of arithmetic on probabilities (temperature, softmax, the memory vote),
    which 8-bit activations would round to 1/255 steps.
    """
    linear_inputs = Counter(n.input[0] for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))
    if not linear_inputs:
        return []
    reached = {linear_inputs.most_common(1)[0][0]}
    names: list[str] = []
    for node in model.graph.node:  # topological order: one pass reaches every descendant
        if any(name in reached for name in node.input):
            reached.update(node.output)
            names.append(node.name)
    return names


def float_nodes(model: onnx.ModelProto, first_convs: int, last_convs: int) -> list[str]:
    """Names of the nodes kept in float: the first and last few Conv nodes, every Gemm/MatMul and all after them."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    linear = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    tail = convs[len(convs) - last_convs :] if last_convs else []
    return list(dict.fromkeys([*convs[:first_convs], *tail, *linear, *after_features(model)]))


def compact_constants(model: onnx.ModelProto, *, min_elements: int = 65536) -> list[str]:
    """Store large float constants that are exactly int8 x a scale per row as int8 + DequantizeLinear, in place.

    The memory vote keeps its photos as int8 with a scale per dimension, but the quantiser's graph
    optimisations fold the int8-to-float conversion into a float constant, four times the size on disk.
    Only a tensor that the int8 form reproduces bit for bit is changed; the runtime folds it back to float
    when the session loads. Returns the names of the tensors changed.
    """
    changed: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2:
            continue
        if tensor.dims[0] * tensor.dims[1] < min_elements:
            continue
        values = onnx.numpy_helper.to_array(tensor)
        scale = (np.abs(values).max(axis=1) / 127.0).astype(np.float32)
        if not np.all(scale > 0):
            continue
        quantised = np.round(values / scale[:, None])
        if np.abs(quantised).max() > 127 or not np.array_equal(quantised.astype(np.float32) * scale[:, None], values):
            continue
        name = tensor.name
        tensor.CopyFrom(onnx.numpy_helper.from_array(quantised.astype(np.int8), f"{name}/int8"))
        model.graph.initializer.extend(
            [
                onnx.numpy_helper.from_array(scale, f"{name}/scale"),
                onnx.numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}/zero_point"),
            ]
        )
        nodes.append(
            onnx.helper.make_node(
                "DequantizeLinear",
                [f"{name}/int8", f"{name}/scale", f"{name}/zero_point"],
                [name],
                name=f"{name}/dequantize",
                axis=0,
            )
        )
        changed.append(name)
    for node in reversed(nodes):  # before every reader: the graph stays in topological order
        model.graph.node.insert(0, node)
    if changed:
        log.info("stored %s as int8 with a scale per row", ", ".join(changed))
    return changed


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration_pixels: np.ndarray,
    *,
    per_channel: bool = True,
    calibration: Calibration = "minmax",
    batch_size: int = 16,
    float_first_convs: int = 3,
    float_last_convs: int = 1,
) -> Path:
    """Static INT8 quantisation (QDQ, uint8 activations, int8 weights) calibrated on uint8 NHWC pixels.

    The first `float_first_convs` and last `float_last_convs` convolutions and the linear heads stay in
    float: measured on version 1, quantising the stem block cost 2.8 points of article-type top-1 and 1.8
    of colour, and keeping these few layers in float brought every head within 0.5 points. On version 3
    only the stem convolution needs float, and quantising the other three is no faster
    (decision 0011).
    """
    check_pixels(calibration_pixels)
    input_name = _input_name(fp32_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vitrine-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference plus onnxruntime's basic graph optimisations (e.g. batch norm folded into conv),
        # so the quantiser sees the graph the runtime will run and can quantise every tensor of known shape.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        keep_float = float_nodes(onnx.load(str(prepared)), float_first_convs, float_last_convs)
        quantize_static(
            str(prepared),
            str(out_path),
            PixelCalibrationReader(input_name, calibration_pixels, batch_size),
            # QDQ is what the CPU kernels are optimised for; uint8 activations with int8 weights is the
            # x86 combination (VNNI u8s8 dot products). Weights use the full 8 bits (reduce_range=False),
            # right for VNNI CPUs; pre-VNNI CPUs may saturate, accepted for the serving targets.
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_CALIBRATION_METHODS[calibration],
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=keep_float,
        )
    quantised = onnx.load(str(out_path))
    compact_constants(quantised)
    set_metadata_props(quantised, metadata_props(fp32_path))
    onnx.save(quantised, str(out_path))
    log.info(
        "quantised %s -> %s (%s calibration on %d images, per_channel=%s, %.1f MB)",
        fp32_path,
        out_path,
        calibration,
        len(calibration_pixels),
        per_channel,
        out_path.stat().st_size / 1e6,
    )
    return out_path


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """FP16 weights and compute (for GPUs), keeping the uint8 input and float32 outputs."""
    model = onnx.load(str(fp32_path))
    # keep_io_types: the service still receives float32 logits and embeddings; the uint8 input is untouched.
    converted = convert_float_to_float16(model, keep_io_types=True)
    # Ops kept in float (e.g. TopK in the memory vote) get Cast nodes appended at the end of the node
    # list; the checker and onnxruntime need the nodes in topological order.
    OnnxModel(converted).topological_sort()
    set_metadata_props(converted, metadata_props(fp32_path))
    onnx.checker.check_model(converted)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(out_path))
    log.info("converted %s -> %s (fp16, %.1f MB)", fp32_path, out_path, out_path.stat().st_size / 1e6)
    return out_path


def benchmark_cpu(
    path: Path, pixels: np.ndarray, *, batch_size: int = 32, threads: int | None = None, seconds: float = 2.0
) -> float:
    """CPU throughput of an ONNX file in images per second, over repeated batches of `pixels`."""
    check_pixels(pixels)
    session = cpu_session(path, threads=threads)
    input_name = session.get_inputs()[0].name
    reps = -(-batch_size // len(pixels))
    batch = np.ascontiguousarray(np.concatenate([pixels] * reps)[:batch_size])
    session.run(None, {input_name: batch})  # warm-up: allocations and kernel selection
    images = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        session.run(None, {input_name: batch})
        images += len(batch)
        elapsed = time.perf_counter() - start
    rate = images / elapsed
    log.info("%s: %.1f images/s on CPU (batch %d, threads %s)", path.name, rate, batch_size, threads)
    return rate

"""A real, tiny ONNX model (no torch) with the service's signature: uint8 NHWC pixels in, one output per head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.schema import Head, ModelMetadata, Preprocessing

HEADS = [
    Head(
        name="articleType",
        output="articleType",
        key="article",
        role="category",
        level="article",
        labels=["Tshirts", "Shirts", "Casual Shoes", "Watches", "Handbags"],
    ),
    Head(
        name="subCategory",
        output="subCategory",
        key="sub",
        role="category",
        level="sub",
        labels=["Topwear", "Shoes", "Watches", "Bags"],
    ),
    Head(
        name="masterCategory",
        output="masterCategory",
        key="master",
        role="category",
        level="master",
        labels=["Apparel", "Accessories", "Footwear"],
    ),
    Head(
        name="baseColour",
        output="baseColour",
        key="colour",
        role="attribute",
        labels=["Black", "White", "Blue", "Navy Blue", "Red", "Green"],
    ),
    Head(name="gender", output="gender", key="gender", role="attribute", labels=["Men", "Women", "Unisex"]),
    Head(name="season", output="season", key="season", role="attribute", labels=["Summer", "Fall", "Winter"]),
    Head(name="usage", output="usage", key="usage", role="attribute", labels=["Casual", "Sports", "Formal"]),
]


def build_tiny_onnx(path: Path, heads: list[Head], size: int, *, seed: int = 0) -> Path:
    """Mean colour and a coarse 2x2 colour layout as features, a random linear layer per head."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node(
            "AveragePool", ["nchw"], ["pooled"], kernel_shape=[size // 2, size // 2], strides=[size // 2, size // 2]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["features"]),
        helper.make_node("LpNormalization", ["features"], ["embedding"], axis=1, p=2),
    ]
    inits = [
        numpy_helper.from_array(np.array([127.0], np.float32), "mean"),
        numpy_helper.from_array(np.array([128.0], np.float32), "std"),
    ]
    outputs = []
    for head in heads:
        weight = rng.normal(0, 1.0, (12, len(head.labels))).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w_{head.output}"))
        nodes.append(helper.make_node("MatMul", ["features", f"w_{head.output}"], [head.output]))
        outputs.append(helper.make_tensor_value_info(head.output, TensorProto.FLOAT, ["batch", len(head.labels)]))
    outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 12]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", size, size, 3])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_repository(
    root: Path, *, name: str = "tiny", version: int = 1, size: int = 32, heads: list[Head] | None = None
) -> Path:
    """A model repository holding one tiny model version; returns the repository folder."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_onnx(folder / "model.onnx", heads or HEADS, size)
    meta = ModelMetadata(
        name=name,
        version=version,
        architecture="tiny-test",
        heads=HEADS if heads is None else heads,
        preprocessing=Preprocessing(size=size),
        files={"fp32": "model.onnx"},
    )
    meta.write(folder)
    return root

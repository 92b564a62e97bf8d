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


def build_pooled_onnx(path: Path, heads: list[Head], size: int, *, members: int = 1, seed: int = 0) -> Path:
    """An explainable tiny model: per member a 1x1 convolution to 8 feature maps, global average pooling and
    a linear layer (Gemm) per head with a temperature; several members average their softmax (log of the
    mean), as `vitrine export ensemble` builds them."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([127.0], np.float32), "mean"),
        numpy_helper.from_array(np.array([128.0], np.float32), "std"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "spatial"),
        numpy_helper.from_array(np.array(1 / members, np.float32), "share"),
    ]
    for m in range(members):
        inits.append(numpy_helper.from_array(rng.normal(0, 1, (8, 3, 1, 1)).astype(np.float32), f"m{m}/conv"))
        nodes += [
            helper.make_node("Conv", ["normalised", f"m{m}/conv"], [f"m{m}/conv_out"]),
            helper.make_node("Relu", [f"m{m}/conv_out"], [f"m{m}/maps"]),
            helper.make_node("ReduceMean", [f"m{m}/maps", "spatial"], [f"m{m}/pooled"], keepdims=1),
            helper.make_node("Flatten", [f"m{m}/pooled"], [f"m{m}/features"], axis=1),
        ]
    outputs = []
    for head in heads:
        probs = []
        for m in range(members):
            name = f"m{m}/{head.output}"
            inits += [
                numpy_helper.from_array(rng.normal(0, 1, (len(head.labels), 8)).astype(np.float32), f"{name}.w"),
                numpy_helper.from_array(rng.normal(0, 1, (len(head.labels),)).astype(np.float32), f"{name}.b"),
                numpy_helper.from_array(np.array(1.0 + m / 2, np.float32), f"{name}.t"),
            ]
            nodes += [
                helper.make_node("Gemm", [f"m{m}/features", f"{name}.w", f"{name}.b"], [f"{name}.z"], transB=1),
                helper.make_node("Div", [f"{name}.z", f"{name}.t"], [f"{name}.logits"]),
            ]
            if members > 1:
                nodes.append(helper.make_node("Softmax", [f"{name}.logits"], [f"{name}.p"], axis=1))
                probs.append(f"{name}.p")
        if members > 1:
            nodes += [
                helper.make_node("Sum", probs, [f"{head.output}.sum"]),
                helper.make_node("Mul", [f"{head.output}.sum", "share"], [f"{head.output}.mean"]),
                helper.make_node("Log", [f"{head.output}.mean"], [head.output]),
            ]
        else:
            nodes.append(helper.make_node("Identity", [f"m0/{head.output}.logits"], [head.output]))
        outputs.append(helper.make_tensor_value_info(head.output, TensorProto.FLOAT, ["batch", len(head.labels)]))
    nodes.append(helper.make_node("LpNormalization", ["m0/features"], ["embedding"], axis=1, p=2))
    outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8]))
    graph = helper.make_graph(
        nodes,
        "tiny-pooled",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", size, size, 3])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_pooled_version(
    folder: Path, *, size: int = 32, members: int = 1, name: str = "tiny", version: int = 1
) -> Path:
    """A version folder holding an explainable-shaped tiny model (not yet made explainable); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    build_pooled_onnx(folder / "model.onnx", HEADS, size, members=members)
    ModelMetadata(
        name=name,
        version=version,
        architecture="tiny-pooled-test",
        heads=HEADS,
        preprocessing=Preprocessing(size=size),
        files={"fp32": "model.onnx"},
    ).write(folder)
    return folder

"""Take one member back out of a packaged ensemble version, as a version folder of its own.

`vitrine export ensemble` copies each member's graph into the merged file under a prefix (`m0/`, `m1/`, ...),
so a member can be recovered exactly when its own folder is gone (version 4's Lite1 member was packaged in a
temporary folder). Run from the repository root, for example:

    .venv/bin/python export/results/ensemble_member.py models/product-classifier/4 1 \
        --out /tmp/lite1m/product-classifier/4

The member folder holds the member's ONNX files in every precision of the ensemble, its card as README.md
(the ensemble's `member-<n>.md`) and the ensemble's model.json with the architecture of the member. Its
metrics and memory-vote summary are not in the ensemble's metadata, so they are left empty: measure the
member with `compare.py`. Check the result by merging it again: an ensemble of the recovered members must
reproduce the original version's outputs (`vitrine export ensemble` checks each member against the merge).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TypeVar

import onnx
from onnx import helper

from app.schema import ONNX_METADATA_KEY, ModelMetadata
from export.convert import output_names, set_metadata_props

P = TypeVar("P", onnx.NodeProto, onnx.TensorProto, onnx.ValueInfoProto)


def member_graph(model: onnx.ModelProto, index: int, outputs: list[str]) -> onnx.ModelProto:
    """The nodes, weights and shapes under prefix `m<index>/`, with the prefix taken off."""
    prefix = f"m{index}/"
    inputs = {i.name for i in model.graph.input}

    def strip(name: str) -> str:
        if name in inputs or not name:
            return name
        if not name.startswith(prefix):
            raise ValueError(f"{name!r} is not the member's")
        return name[len(prefix) :]

    def renamed(proto: P) -> P:
        copy = type(proto)()
        copy.CopyFrom(proto)
        copy.name = strip(proto.name) if proto.name.startswith(prefix) else proto.name
        return copy

    nodes = []
    for node in model.graph.node:
        if node.name.startswith("ensemble/") or not all(o.startswith(prefix) for o in node.output):
            continue  # the ensemble's averaging (which also reads the member's outputs), or another member's node
        copy = renamed(node)
        copy.input[:] = [strip(n) for n in node.input]
        copy.output[:] = [strip(n) for n in node.output]
        nodes.append(copy)
    initializers = [renamed(t) for t in model.graph.initializer if t.name.startswith(prefix)]
    infos = {info.name: info for info in (renamed(v) for v in model.graph.value_info if v.name.startswith(prefix))}
    missing = [o for o in outputs if o not in infos]
    if missing:
        raise ValueError(f"member {index} has no shape for outputs {missing}")
    graph = helper.make_graph(
        nodes,
        model.graph.name,
        list(model.graph.input),
        [infos.pop(o) for o in outputs],
        initializer=initializers,
        value_info=list(infos.values()),
    )
    member = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    member.producer_name, member.producer_version = model.producer_name, model.producer_version
    return member


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ensemble", type=Path, help="the ensemble's version folder")
    parser.add_argument("index", type=int, help="the member, from 0 (as in the file's m<index>/ prefix)")
    parser.add_argument("--out", type=Path, required=True, help="the member's version folder to write")
    args = parser.parse_args()

    meta = ModelMetadata.read(args.ensemble)
    if not meta.members or not 0 <= args.index < len(meta.members):
        raise SystemExit(f"{args.ensemble} has no member {args.index}")
    label = meta.members[args.index]
    architecture = label.rsplit("(", 1)[-1].rstrip(")")
    member_meta = meta.model_copy(deep=True)
    member_meta.architecture, member_meta.members, member_meta.metrics = architecture, None, {}
    member_meta.memory_vote = None  # summarised in the member's card only
    outputs = output_names(meta)

    args.out.mkdir(parents=True, exist_ok=False)
    for precision, name in meta.files.items():
        model = onnx.load(str(args.ensemble / name))
        member = member_graph(model, args.index, outputs)
        props = {p.key: p.value for p in model.metadata_props}
        set_metadata_props(member, {**props, ONNX_METADATA_KEY: member_meta.model_dump_json()})
        onnx.checker.check_model(member)
        onnx.save_model(member, str(args.out / name))
        print(f"{precision}: {args.out / name} ({(args.out / name).stat().st_size / 1e6:.1f} MB)")
    member_meta.write(args.out)
    shutil.copy(args.ensemble / f"member-{args.index + 1}.md", args.out / "README.md")
    shutil.copy(args.ensemble / "data_report.json", args.out / "data_report.json")
    print(f"member {args.index} ({label}) written to {args.out}")


if __name__ == "__main__":
    main()

"""An ensemble of packaged model versions as one ONNX file per precision.

`vitrine export ensemble --members runs/members/<a>/1 runs/members/<b>/1 --data ... --out models/<name>` merges
the members' FP32, INT8 and FP16 files side by side into one graph that reads the same `pixels` input.
Each head answers the log of the mean of the members' softmax (their own temperatures and memory votes
included); the embedding is the first member's. Members must share preprocessing, heads and labels.

The merged graph's outputs are checked against the members run one by one (the ensemble parity), and
the folder gets the same evaluation, per-precision metrics, CPU speed and model card as `package` writes.
FP32 tensors are stored beside the graph, one external data file per member, so that no file passes the
repository's 20 MB limit.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from app.runtime import softmax
from app.schema import ONNX_METADATA_KEY, ModelMetadata
from export.card import CARD_FILE, write_card
from export.convert import metadata_props, onnx_outputs, set_metadata_props
from export.evaluate import evaluate
from export.pipeline import FILES, Splits, file_probabilities, score_files, version_folder
from export.quantize import compact_constants
from export.steps import check_matches, int8_drops

log = logging.getLogger(__name__)

EXTERNAL_MIN_BYTES = 1024  # FP32 tensors at least this large go to the member's external data file


@dataclass
class Member:
    """One packaged version folder taking part in the ensemble."""

    folder: Path
    meta: ModelMetadata

    @classmethod
    def read(cls, folder: Path) -> Member:
        return cls(folder, ModelMetadata.read(folder))

    def file(self, precision: str) -> Path:
        """The member's ONNX file of one precision."""
        return self.folder / self.meta.files.get(precision, FILES[precision])

    def has(self, precision: str) -> bool:
        return self.file(precision).is_file()

    @property
    def label(self) -> str:
        """The member as the ensemble's metadata names it: its name and version, which identify it wherever it
        lies (a folder may be a git-ignored work path)."""
        return f"{self.meta.name} v{self.meta.version} ({self.meta.architecture})"


def check_compatible(members: list[Member]) -> None:
    """The members must read the same pixels and answer the same heads with the same labels, in order."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    first = members[0].meta
    for member in members[1:]:
        meta = member.meta
        if meta.preprocessing != first.preprocessing:
            raise ValueError(f"{member.folder}: preprocessing differs from {members[0].folder}")
        mine = [(h.name, h.output, h.key, h.labels) for h in meta.heads]
        theirs = [(h.name, h.output, h.key, h.labels) for h in first.heads]
        if mine != theirs:
            raise ValueError(f"{member.folder}: heads or labels differ from {members[0].folder}")
        if (meta.embedding_output is None) != (first.embedding_output is None):
            raise ValueError(f"{member.folder}: embedding output differs from {members[0].folder}")


def check_not_a_member(member_folders: list[Path], out: Path, version: int | None) -> None:
    """Raise `ValueError` when the version to write (`out/<version>`) is one of the members."""
    if version is None:
        return  # the next free version is no member
    target = (out / str(version)).resolve()
    for folder in member_folders:
        if folder.resolve() == target:
            raise ValueError(f"--out/--version {out / str(version)} is one of the --members: choose another version")


def _prefixed(graph: onnx.GraphProto, prefix: str, shared: set[str]) -> onnx.GraphProto:
    """A copy of `graph` with every node, tensor and initializer name prefixed, except the `shared` names."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ValueError("members with subgraphs (If/Loop/Scan) are not supported")

    def rename(name: str) -> str:
        return name if not name or name in shared else prefix + name

    out = onnx.GraphProto()
    out.CopyFrom(graph)
    for node in out.node:
        node.name = prefix + node.name if node.name else ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for tensor in out.initializer:
        tensor.name = rename(tensor.name)
    for info in [*out.value_info, *out.output]:
        info.name = rename(info.name)
    return out


def merge(models: list[onnx.ModelProto], heads: list[str], embedding: str | None) -> onnx.ModelProto:
    """One graph running every member on the shared input; each head answers log(mean of the members' softmax)."""
    inputs = [[i.name for i in m.graph.input] for m in models]
    if any(names != inputs[0] or len(names) != 1 for names in inputs):
        raise ValueError(f"members must have the same single input, got {inputs}")
    shared = set(inputs[0])
    graphs = [_prefixed(m.graph, f"m{i}/", shared) for i, m in enumerate(models)]
    nodes = [node for g in graphs for node in g.node]
    initializers = [t for g in graphs for t in g.initializer]
    value_info = [v for g in graphs for v in g.value_info]
    outputs = []
    weight = helper.make_tensor("ensemble/weight", onnx.TensorProto.FLOAT, [], [1.0 / len(models)])
    initializers.append(weight)
    for head in heads:
        probs = [f"m{i}/{head}/softmax" for i in range(len(models))]
        for i, name in enumerate(probs):
            nodes.append(
                helper.make_node("Softmax", [f"m{i}/{head}"], [name], name=f"ensemble/{head}/softmax{i}", axis=1)
            )
        nodes.append(helper.make_node("Sum", probs, [f"ensemble/{head}/sum"], name=f"ensemble/{head}/sum"))
        nodes.append(
            helper.make_node(
                "Mul", [f"ensemble/{head}/sum", weight.name], [f"ensemble/{head}/mean"], name=f"ensemble/{head}/mean"
            )
        )
        nodes.append(helper.make_node("Log", [f"ensemble/{head}/mean"], [head], name=f"ensemble/{head}/log"))
        member_output = next(o for o in graphs[0].output if o.name == f"m0/{head}")
        output = onnx.ValueInfoProto()
        output.CopyFrom(member_output)
        output.name = head
        outputs.append(output)
    if embedding is not None:
        nodes.append(helper.make_node("Identity", [f"m0/{embedding}"], [embedding], name="ensemble/embedding"))
        first = next(o for o in graphs[0].output if o.name == f"m0/{embedding}")
        output = onnx.ValueInfoProto()
        output.CopyFrom(first)
        output.name = embedding
        outputs.append(output)
    # Member outputs stay as value_info so that shapes remain known inside the graph.
    value_info += [o for g in graphs for o in g.output]
    graph = helper.make_graph(
        nodes, "ensemble", list(models[0].graph.input), outputs, initializer=initializers, value_info=value_info
    )
    opsets: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    merged = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], ir_version=models[0].ir_version
    )
    merged.producer_name = models[0].producer_name
    merged.producer_version = models[0].producer_version
    return merged


def save_split(model: onnx.ModelProto, path: Path, members: int, *, min_bytes: int = EXTERNAL_MIN_BYTES) -> None:
    """Save with each member's tensors of `min_bytes` or more in its own external data file (`<file>.m<i>.data`)."""
    for tensor in model.graph.initializer:
        prefix = tensor.name.split("/", 1)[0]
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= min_bytes and re.fullmatch(r"m\d+", prefix):
            onnx.external_data_helper.set_external_data(tensor, location=f"{path.name}.{prefix}.data")
    data = [path.parent / f"{path.name}.m{i}.data" for i in range(members)]
    for file in data:
        file.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path))
    for file in data:
        if file.exists():
            file.chmod(0o644)  # onnx creates them owner-only; the container's service user must read them


def without_plots(card: str, member: str) -> str:
    """A member's card without its Plots section, whose relative links would show the ensemble's own plots."""
    start = card.find("\n## Plots\n")
    if start < 0:
        return card
    end = card.find("\n## ", start + 1)
    note = f"\n## Plots\n\nIn the member's own version folder, {member}.\n"
    return card[:start] + note + (card[end:] if end >= 0 else "")


def build_file(members: list[Member], precision: str, meta: ModelMetadata, path: Path) -> Path:
    """Merge the members' files of one precision into `path`, with the ensemble's metadata."""
    models = [onnx.load(str(m.file(precision))) for m in members]
    merged = merge(models, [h.output for h in meta.heads], meta.embedding_output)
    props = metadata_props(members[0].file(precision))
    props[ONNX_METADATA_KEY] = meta.model_dump_json()
    set_metadata_props(merged, props)
    if precision == "int8":
        compact_constants(merged)
    onnx.checker.check_model(merged)
    if precision == "fp32":
        save_split(merged, path, len(members))
    else:
        onnx.save_model(merged, str(path))
    log.info("merged %d members into %s (%.1f MB)", len(members), path, path.stat().st_size / 1e6)
    return path


def member_mean(members: list[Member], precision: str, pixels: np.ndarray, heads: list[str]) -> dict[str, np.ndarray]:
    """The members' softmax averaged outside the graph, by output name: what the merged file must reproduce."""
    total: dict[str, np.ndarray] = {}
    for member in members:
        for head, probs in file_probabilities(member.file(precision), {h: h for h in heads}, pixels).items():
            total[head] = total.get(head, 0) + probs
    return {head: value / len(members) for head, value in total.items()}


def build_ensemble(
    member_folders: list[Path],
    splits: Splits,
    out: Path,
    version: int | None,
    *,
    overwrite: bool,
    reproduce: str,
    parity_images: int = 512,
    bench_seconds: float = 3.0,
    max_int8_drop: float = 0.01,
    members_built_apart: bool = True,
) -> Path:
    """Write a version folder holding the ensemble of `member_folders` in every precision they all have.

    `members_built_apart`: the card's reproduce section first points at the members' cards for their commands
    (not when `reproduce` builds the members too, as a recipe's build does)."""
    check_not_a_member(member_folders, out, version)
    members = [Member.read(f) for f in member_folders]
    check_compatible(members)
    precisions = [p for p in FILES if all(m.has(p) for m in members)]
    if "fp32" not in precisions:
        raise ValueError("every member needs its FP32 file")
    heads = [h.output for h in members[0].meta.heads]
    check_matches(members[0].meta, splits.test)  # the members share heads, labels and input (check_compatible)
    with version_folder(out, version, overwrite=overwrite) as (folder, number):
        meta = members[0].meta.model_copy(deep=True)
        meta.name, meta.version = out.name, number
        meta.created = datetime.now(UTC).isoformat(timespec="seconds")
        meta.architecture = "ensemble of " + " + ".join(m.meta.architecture for m in members)
        meta.members = [m.label for m in members]
        meta.memory_vote = None  # each member keeps its own vote inside the graph; see the members' cards
        meta.files = {p: FILES[p] for p in precisions}
        meta.metrics = {}  # none until measured below (the merged files embed this metadata)

        parity: dict[str, object] = {"images": min(parity_images, len(splits.val))}
        pixels = splits.val.pixels[:parity_images]
        for precision in precisions:
            path = build_file(members, precision, meta, folder / FILES[precision])
            merged = onnx_outputs(path, pixels)
            expected = member_mean(members, precision, pixels, heads)
            diff = max(float(np.abs(softmax(merged[h]) - expected[h]).max()) for h in heads)
            agree = min(float((merged[h].argmax(1) == expected[h].argmax(1)).mean()) for h in heads)
            parity[f"{precision}.max_abs_probability_diff"] = diff
            parity[f"{precision}.min_top1_agreement"] = agree
            log.info(
                "%s parity against the members run one by one: max |p diff| %.2e, top-1 agreement %.4f",
                precision,
                diff,
                agree,
            )
            if diff > 1e-3 or agree < 0.999:
                raise AssertionError(
                    f"the merged {precision} file does not reproduce its members ({diff:.2e}, {agree:.4f})"
                )
        outputs = {h.name: h.output for h in meta.heads}
        paths = {precision: folder / name for precision, name in meta.files.items()}
        scores = score_files(paths, outputs, splits.test, bench_seconds=bench_seconds)
        meta.metrics, speed = scores.metrics, scores.speed
        if "int8" in meta.metrics:  # the members each passed this check; their mean must too
            int8_drops(meta.metrics, list(outputs), max_int8_drop)
        evaluate(scores.probs["fp32"], splits.test, folder)
        meta.write(folder)

        for i, member in enumerate(members):  # the members' own cards: recipe, history and vote of each
            card = without_plots((member.folder / CARD_FILE).read_text(encoding="utf-8"), member.label)
            (folder / f"member-{i + 1}.md").write_text(card, encoding="utf-8")
        data_report = (members[0].folder / "data_report.json").read_text()
        (folder / "data_report.json").write_text(data_report)
        recipe = {
            "combination": "log of the mean of the members' softmax, per head; embedding of member 1",
            "cpu_images_per_second_batch32": {k: round(v) for k, v in speed.items()},
        }
        members_first = [f"# member {i}: the commands in member-{i}.md" for i in range(1, len(members) + 1)]
        members_first = members_first if members_built_apart else []
        write_card(
            folder,
            meta,
            data_report=json.loads(data_report),
            history=[],
            recipe=recipe,
            reproduce="\n".join([*members_first, reproduce]),
            parity=parity,
        )
        ModelMetadata.read(folder)
    log.info("wrote %s", out / str(number))
    return out / str(number)

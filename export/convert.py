"""Export a trained classifier to a self-contained ONNX file and check it against PyTorch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from app.schema import ONNX_METADATA_KEY, ModelMetadata

log = logging.getLogger(__name__)

PRODUCER_NAME = "vitrine-export"
EXPORTER_KEY = "vitrine.exporter"


class ParityError(AssertionError):
    """The ONNX file does not reproduce the PyTorch model within the tolerances."""


@dataclass
class ParityReport:
    """How closely onnxruntime reproduces PyTorch on the same pixels."""

    max_abs_logit_diff: float
    top1_agreement: dict[str, float]
    images: int
    max_abs_embedding_diff: float = 0.0
    per_head_max_abs_diff: dict[str, float] = field(default_factory=dict)


def _producer_version() -> str:
    try:
        return importlib_metadata.version("vitrine")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def output_names(meta: ModelMetadata) -> list[str]:
    """ONNX output names in the model's output order: one logits output per head, then the embedding."""
    names = [h.output for h in meta.heads]
    if meta.embedding_output is not None:
        names.append(meta.embedding_output)
    return names


def set_metadata_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Set (add or replace) string entries in an ONNX model's `metadata_props`."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


def metadata_props(path: Path) -> dict[str, str]:
    """All `metadata_props` of an ONNX file, as a dict."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def export_onnx(model: torch.nn.Module, meta: ModelMetadata, path: Path, *, opset: int = 18) -> Path:
    """Export `model` (uint8 NHWC in, logits per head + embedding out) to one self-contained ONNX file."""
    spec = meta.preprocessing
    names = output_names(meta)
    head_names = getattr(model, "head_names", None)
    if head_names is not None and list(head_names) != [h.name for h in meta.heads]:
        raise ValueError(f"model heads {head_names} do not match metadata heads {[h.name for h in meta.heads]}")
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, spec.size, spec.size, 3), dtype=torch.uint8, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            produced = model(example)
        if len(produced) != len(names):
            raise ValueError(f"model returns {len(produced)} outputs, metadata names {len(names)}: {names}")
        # The dynamo exporter (torch's default) keeps the graph close to the module and runs the onnxscript
        # optimiser (constant folding, batch norm folded into convolutions); external_data=False keeps one file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[spec.input_name],
                output_names=names,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)

    proto = onnx.load(str(path))
    proto.producer_name = PRODUCER_NAME
    proto.producer_version = _producer_version()
    proto.doc_string = f"Vitrine model {meta.name} v{meta.version} ({meta.architecture})"
    set_metadata_props(
        proto,
        {ONNX_METADATA_KEY: meta.model_dump_json(), EXPORTER_KEY: f"torch {torch.__version__} dynamo, opset {opset}"},
    )
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    log.info("exported %s (%d outputs, opset %d, %.1f MB)", path, len(names), opset, path.stat().st_size / 1e6)
    return path


def read_onnx_metadata(path: Path) -> ModelMetadata:
    """The `ModelMetadata` stored in an ONNX file's `metadata_props`."""
    props = metadata_props(path)
    if ONNX_METADATA_KEY not in props:
        raise ValueError(f"{path} has no '{ONNX_METADATA_KEY}' entry in its metadata_props")
    return ModelMetadata.model_validate_json(props[ONNX_METADATA_KEY])


def cpu_session(path: Path, *, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session on `path`; `threads` bounds intra-op threads (None: onnxruntime's default)."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_pixels(pixels: np.ndarray) -> None:
    """Raise `ValueError` unless `pixels` is a non-empty uint8 NHWC RGB batch."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 NHWC pixels (N, S, S, 3), got {pixels.dtype} {pixels.shape}")
    if len(pixels) == 0:
        raise ValueError("no pixels given")


def onnx_outputs(
    path: Path, pixels: np.ndarray, *, batch_size: int = 64, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Run an ONNX file over uint8 NHWC pixels in batches on CPU; raw outputs by output name."""
    check_pixels(pixels)
    session = cpu_session(path, threads=threads)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(pixels), batch_size):
        batch = np.ascontiguousarray(pixels[start : start + batch_size])
        for name, value in zip(names, session.run(names, {input_name: batch}), strict=True):
            chunks[name].append(np.asarray(value))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def torch_outputs(model: torch.nn.Module, pixels: np.ndarray, *, batch_size: int = 64) -> list[np.ndarray]:
    """Run the PyTorch model (eval mode, no grad) over uint8 NHWC pixels; outputs in the model's order."""
    check_pixels(pixels)
    was_training = model.training
    model.eval()
    chunks: list[list[np.ndarray]] = []
    try:
        with torch.no_grad():
            for start in range(0, len(pixels), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
                produced = model(batch)
                if not chunks:
                    chunks = [[] for _ in produced]
                for i, value in enumerate(produced):
                    chunks[i].append(value.detach().cpu().numpy())
    finally:
        model.train(was_training)
    return [np.concatenate(parts) for parts in chunks]


def check_parity(
    model: torch.nn.Module,
    path: Path,
    pixels: np.ndarray,
    head_names: list[str],
    *,
    max_abs_diff: float = 1e-3,
    min_agreement: float = 0.999,
) -> ParityReport:
    """Compare PyTorch and onnxruntime outputs on the same pixels; raise `ParityError` beyond the tolerances."""
    expected = torch_outputs(model, pixels)
    produced = list(onnx_outputs(path, pixels).values())
    if len(expected) != len(produced) or len(produced) < len(head_names):
        raise ParityError(
            f"output count differs: PyTorch {len(expected)}, ONNX {len(produced)}, heads {len(head_names)}"
        )
    per_head: dict[str, float] = {}
    agreement: dict[str, float] = {}
    # Outputs are positional: heads in `head_names` order, then the embedding.
    for i, name in enumerate(head_names):
        ref, got = expected[i], produced[i]
        if ref.shape != got.shape:
            raise ParityError(f"head {name}: PyTorch shape {ref.shape}, ONNX shape {got.shape}")
        per_head[name] = float(np.max(np.abs(ref - got)))
        agreement[name] = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    embedding_diff = 0.0
    if len(expected) > len(head_names):
        ref_emb, got_emb = expected[len(head_names)], produced[len(head_names)]
        if ref_emb.shape != got_emb.shape:
            raise ParityError(f"embedding: PyTorch shape {ref_emb.shape}, ONNX shape {got_emb.shape}")
        embedding_diff = float(np.max(np.abs(ref_emb - got_emb)))
    report = ParityReport(
        max_abs_logit_diff=max(per_head.values(), default=0.0),
        top1_agreement=agreement,
        images=len(pixels),
        max_abs_embedding_diff=embedding_diff,
        per_head_max_abs_diff=per_head,
    )
    log.info(
        "parity on %d images: max |logit diff| %.2e, max |embedding diff| %.2e, top-1 agreement %s",
        report.images,
        report.max_abs_logit_diff,
        report.max_abs_embedding_diff,
        agreement,
    )
    problems = [
        f"head {n}: max |logit diff| {d:.3g} > {max_abs_diff:g}" for n, d in per_head.items() if d > max_abs_diff
    ]
    if embedding_diff > max_abs_diff:
        problems.append(f"embedding: max |diff| {embedding_diff:.3g} > {max_abs_diff:g}")
    problems += [
        f"head {n}: top-1 agreement {a:.4f} < {min_agreement:g}" for n, a in agreement.items() if a < min_agreement
    ]
    if problems:
        raise ParityError(
            f"ONNX file {path} differs from the PyTorch model on {len(pixels)} images: " + "; ".join(problems)
        )
    return report

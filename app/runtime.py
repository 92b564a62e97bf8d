"""onnxruntime session for one model version: providers, signature check, batched runs, softmax."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.errors import ModelLoadError
from app.repository import ModelVersion
from app.schema import ModelMetadata

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_NAMES = {CUDA: "cuda", CPU: "cpu"}
GPU_MIN_BATCH = 32  # on CUDA smaller batches are padded up to this many images


def cuda_available() -> bool:
    """True when this onnxruntime build offers the CUDA provider."""
    return CUDA in ort.get_available_providers()


def choose_providers(setting: str) -> list[str | tuple[str, dict[str, Any]]]:
    """Provider list for onnxruntime from the `providers` setting (auto, cpu, cuda)."""
    if setting == "cpu" or (setting == "auto" and not cuda_available()):
        return [CPU]
    if not cuda_available():
        raise ModelLoadError("providers=cuda, but this onnxruntime has no CUDA provider (install the gpu extra)")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia pip packages, without importing torch
    # HEURISTIC: EXHAUSTIVE would re-benchmark every new batch shape for seconds; NHWC suits tensor cores.
    return [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1"}), CPU]


def wants_cuda(provider_setting: str) -> bool:
    """True when the `providers` setting asks for CUDA (cuda, or auto with the CUDA provider compiled in)."""
    return provider_setting == "cuda" or (provider_setting == "auto" and cuda_available())


def choose_precision(version: ModelVersion, setting: str, provider_setting: str) -> str:
    """Which model file to load: auto takes fp16 for CUDA, int8 for CPU, else fp32."""
    if setting != "auto":
        return setting
    preferred = ["fp16", "fp32"] if wants_cuda(provider_setting) else ["int8", "fp32"]
    return next((p for p in preferred if p in version.metadata.files), "fp32")


def session_options(threads: int, *, spinning: bool) -> ort.SessionOptions:
    """The service's onnxruntime session options (also used by the benchmark's ceiling, to match them).

    The memory pattern is off: onnxruntime would plan one block per batch shape it has seen and keep it, more
    resident memory for the several shapes the service runs at the same throughput (docs/performance.md).
    """
    options = ort.SessionOptions()
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    shifted: np.ndarray = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


class Runtime:
    """A loaded model: `run` maps a uint8 NHWC batch to probabilities per head (and the embedding)."""

    def __init__(
        self,
        version: ModelVersion,
        *,
        precision: str,
        providers: str,
        intra_op_threads: int,
        cpu_intra_op_threads: int | None = None,
        spinning: bool = True,
    ) -> None:
        """`cpu_intra_op_threads`: the threads to use instead if CUDA is asked for (`auto` with the CUDA
        provider compiled in) but the session falls back to the CPU; default `intra_op_threads`."""
        self.metadata: ModelMetadata = version.metadata
        self.precision = choose_precision(version, precision, providers)
        self.intra_op_threads = intra_op_threads
        options = session_options(intra_op_threads, spinning=spinning)
        self.session, self.provider = self._open(version, providers, options)
        if wants_cuda(providers) and self.provider != "cuda":
            # CUDA is compiled in but not usable (no GPU or libraries): the file and the threads the CPU takes.
            log.warning("the CUDA provider is compiled in but not usable: serving on the CPU")
            cpu_choice = choose_precision(version, precision, "cpu")
            cpu_threads = cpu_intra_op_threads or intra_op_threads
            if (self.precision, self.intra_op_threads) != (cpu_choice, cpu_threads):
                self.precision, self.intra_op_threads = cpu_choice, cpu_threads
                options = session_options(cpu_threads, spinning=spinning)
                self.session, self.provider = self._open(version, "cpu", options)
        self._check_signature()
        self._padded_sizes: list[int] = []
        self.head_outputs = [h.output for h in self.metadata.heads]
        self.output_names = [*self.head_outputs]
        if self.metadata.embedding_output:
            self.output_names.append(self.metadata.embedding_output)
        log.info(
            "loaded %s v%d (%s) from %s on %s, intra-op threads per run: %d",
            self.metadata.name,
            self.metadata.version,
            self.precision,
            self.path,
            self.provider,
            self.intra_op_threads,
        )

    def _open(
        self, version: ModelVersion, providers: str, options: ort.SessionOptions
    ) -> tuple[ort.InferenceSession, str]:
        """Open the session for `self.precision`; return it with the provider really in use."""
        self.path: Path = version.file_for(self.precision)
        try:
            session = ort.InferenceSession(str(self.path), options, providers=choose_providers(providers))
        except ModelLoadError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from exc
        # onnxruntime falls back to CPU silently when CUDA libraries are missing: report what is really used.
        active = session.get_providers()[0]
        if providers == "cuda" and active != CUDA:
            raise ModelLoadError("providers=cuda, but onnxruntime fell back to CPU (CUDA/cuDNN libraries missing?)")
        return session, PROVIDER_NAMES.get(active, active)

    def _check_signature(self) -> None:
        """The graph's input and outputs must match the metadata, or the model is refused."""
        spec = self.metadata.preprocessing
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != spec.input_name:
            raise ModelLoadError(f"model input is {[i.name for i in inputs]}, metadata says {spec.input_name!r}")
        if inputs[0].type != "tensor(uint8)":
            raise ModelLoadError(f"model input type is {inputs[0].type}, expected tensor(uint8)")
        shape = inputs[0].shape
        if len(shape) != 4 or list(shape[1:]) != [spec.size, spec.size, 3]:
            raise ModelLoadError(f"model input shape is {shape}, expected [batch, {spec.size}, {spec.size}, 3]")
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        undeclared = []
        for head in self.metadata.heads:
            if head.output not in outputs:
                raise ModelLoadError(f"model has no output {head.output!r} for head {head.name}")
            width = outputs[head.output][-1] if outputs[head.output] else None
            if isinstance(width, int) and width != len(head.labels):
                raise ModelLoadError(f"output {head.output!r} has {width} classes, metadata lists {len(head.labels)}")
            if not isinstance(width, int):
                undeclared.append(head)
        embedding = self.metadata.embedding_output
        if embedding and embedding not in outputs:
            raise ModelLoadError(f"model has no embedding output {embedding!r}")
        if undeclared:  # the graph does not say its widths: run one image and look
            names = [h.output for h in undeclared]
            for head, value in zip(undeclared, self.session.run(names, {spec.input_name: self.blank(1)}), strict=True):
                if value.shape != (1, len(head.labels)):
                    raise ModelLoadError(
                        f"output {head.output!r} gives shape {list(value.shape)[1:]} per image, metadata lists "
                        f"{len(head.labels)} classes"
                    )

    def batch_shapes(self, max_batch_size: int) -> list[int]:
        """Batch sizes the session will see. On CPU any size runs as it is. On CUDA every new shape costs
        seconds of cuDNN set-up, while a batch of up to GPU_MIN_BATCH runs as fast as a batch of 1
        (docs/performance.md): batches are padded to GPU_MIN_BATCH (or max_batch_size if smaller), larger ones to
        max_batch_size."""
        if self.provider != "cuda":
            return sorted({1, max_batch_size})
        return sorted({min(max_batch_size, GPU_MIN_BATCH), max_batch_size})

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities per head output (and the raw embedding) for a uint8 NHWC batch."""
        n = len(pixels)
        if self._padded_sizes:
            target = next((s for s in self._padded_sizes if s >= n), n)
            if target > n:
                pad = np.full((target - n, *pixels.shape[1:]), 255, dtype=np.uint8)
                pixels = np.concatenate([pixels, pad])
        results = self.session.run(self.output_names, {self.metadata.preprocessing.input_name: pixels})
        out = {name: value[:n] for name, value in zip(self.output_names, results, strict=True)}
        for name in self.head_outputs:
            out[name] = probs = softmax(np.asarray(out[name], dtype=np.float32))
            if not np.isfinite(probs).all():  # e.g. FP16 overflow: fail the batch rather than answer NaN scores
                raise RuntimeError(f"model output {name!r} is not finite")
        return out

    def blank(self, n: int) -> np.ndarray:
        """`n` white images of the model's input size (a catalogue photo's background): for runs that only
        exercise the model."""
        size = self.metadata.preprocessing.size
        return np.full((n, size, size, 3), 255, dtype=np.uint8)

    def warm_up(self, max_batch_size: int) -> list[int]:
        """Run every batch shape so no request pays allocation or kernel-selection cost; return them.

        On CUDA that set-up holds only for the calling thread, so warm up on the thread(s) that will run the
        model (`Batcher.on_each_worker`). There each shape also runs twice, the second time on varied pixels:
        with one warm-up run per shape, the next run of that shape (the first request's) was still slow
        (docs/performance.md)."""
        shapes = self.batch_shapes(max_batch_size)
        cuda = self.provider == "cuda"
        self._padded_sizes = shapes if cuda else []
        rng = np.random.default_rng(0)
        for n in shapes:
            white = self.blank(n)
            self.run(white)
            if cuda:
                self.run(rng.integers(0, 256, white.shape, dtype=np.uint8))
        return shapes

"""Knowledge distillation: a packaged model (e.g. the ensemble) teaches the network being trained.

The teacher is a packaged version folder, run through onnxruntime on the same augmented views the
student sees in each step (turned back into the uint8 pixels the service feeds), so its targets follow
the augmentation. Each head's loss becomes `(1 - weight) * cross-entropy(labels) + weight * T^2 *
KL(softmax(teacher / T) || softmax(student / T))` (Hinton et al., 2015).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from app.schema import ModelMetadata
from export.convert import cpu_session

log = logging.getLogger(__name__)


class Teacher:
    """A packaged model's INT8 file (FP32 if it has none), answering soft targets per head."""

    def __init__(self, folder: Path, classes: dict[str, list[str]], *, size: int, mean: float, std: float) -> None:
        self.meta = ModelMetadata.read(folder)
        pre = self.meta.preprocessing
        if (pre.size, pre.mean, pre.std) != (size, mean, std):
            raise ValueError(
                f"teacher {folder} takes {pre.size} px, mean {pre.mean}, std {pre.std}; "
                f"the student {size} px, mean {mean}, std {std}"
            )
        self.outputs: dict[str, str] = {}
        for head in self.meta.heads:
            if head.name not in classes:
                continue
            if head.labels != classes[head.name]:
                raise ValueError(f"teacher {folder}: head {head.name} has other labels than the training data")
            self.outputs[head.name] = head.output
        file = self.meta.files.get("int8") or self.meta.files["fp32"]
        self.session = cpu_session(folder / file)
        self.input_name = pre.input_name
        self.mean, self.std = mean, std
        log.info("teacher %s (%s) for heads %s", folder, file, sorted(self.outputs))

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's raw outputs (logits or log-probabilities) per head for normalised NCHW views `x`."""
        pixels = (x.detach() * self.std + self.mean).round().clamp(0, 255).to(torch.uint8)
        batch = np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())
        names = list(self.outputs.values())
        values = self.session.run(names, {self.input_name: batch})
        return {head: torch.from_numpy(np.asarray(v)) for head, v in zip(self.outputs, values, strict=True)}


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    target = F.log_softmax(teacher.float() / temperature, dim=1)
    log_probs = F.log_softmax(student / temperature, dim=1)
    return F.kl_div(log_probs, target, reduction="batchmean", log_target=True) * temperature**2

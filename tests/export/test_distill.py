"""Distillation: the teacher answers the student's augmented views as the service would, and the loss pulls
the student's softmax towards the teacher's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.preprocess import decode
from app.schema import Preprocessing
from export.convert import onnx_outputs
from export.distill import Teacher, distillation_loss
from tests.tiny_model import HEADS

CLASSES = {h.name: list(h.labels) for h in HEADS}


@pytest.fixture
def teacher_folder(tiny_repo: Path) -> Path:
    return tiny_repo / "tiny" / "1"


def test_teacher_answers_normalised_views_as_the_model_answers_their_pixels(
    teacher_folder: Path, photos: list[bytes]
) -> None:
    pixels = np.stack([decode(p, Preprocessing(size=32)) for p in photos[:6]])
    views = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.0) / 128.0

    soft = Teacher(teacher_folder, CLASSES, size=32, mean=127.0, std=128.0)(views)

    expected = onnx_outputs(teacher_folder / "model.onnx", pixels)
    assert set(soft) == set(CLASSES)
    for head in HEADS:
        np.testing.assert_allclose(soft[head.name].numpy(), expected[head.output], rtol=1e-6, atol=1e-6)


def test_teacher_answers_only_the_students_heads(teacher_folder: Path) -> None:
    classes = {name: CLASSES[name] for name in ("articleType", "season")}
    teacher = Teacher(teacher_folder, classes, size=32, mean=127.0, std=128.0)
    assert set(teacher(torch.zeros(2, 3, 32, 32))) == {"articleType", "season"}


def test_teacher_refuses_other_labels_or_input(teacher_folder: Path) -> None:
    relabelled = {**CLASSES, "season": ["Summer", "Fall", "Spring"]}
    with pytest.raises(ValueError, match="season"):
        Teacher(teacher_folder, relabelled, size=32, mean=127.0, std=128.0)
    with pytest.raises(ValueError, match="48 px"):
        Teacher(teacher_folder, CLASSES, size=48, mean=127.0, std=128.0)


def test_distillation_pulls_the_student_to_the_teachers_softened_answer() -> None:
    teacher = torch.tensor([[4.0, 1.0, 0.0, -2.0], [0.0, 3.0, 2.5, 0.0]])
    assert distillation_loss(teacher.clone(), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)

    student = torch.zeros_like(teacher, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=1.0)
    first = distillation_loss(student, teacher, 2.0).item()
    for _ in range(300):
        optimizer.zero_grad()
        distillation_loss(student, teacher, 2.0).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert first > 0.1 and distillation_loss(student, teacher, 2.0).item() < 1e-3
    # The student matches the teacher's whole distribution, not only its top class.
    np.testing.assert_allclose(torch.softmax(student.detach(), 1).numpy(), torch.softmax(teacher, 1).numpy(), atol=1e-2)


def test_recipe_options_reach_the_training_recipe() -> None:
    from export.cli import _args, _config

    given = {
        "epochs": 2, "warmup_epochs": 0, "head_lr": 0.01, "backbone_lr": 0.001, "size": 64,
        "init_from": Path("a.pt"), "teacher": Path("t"), "distill_weight": 0.7, "distill_temperature": 3.0,
    }  # fmt: skip
    argv = ["train", "--data", "d"]
    for key, value in given.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert _config(_args(argv)).train.model_dump(include=set(given)) == given
    untouched = _config(_args(["train", "--data", "d"])).train
    assert untouched.teacher is None and untouched.epochs == 8 and untouched.distill_weight == 0.5

"""The service settings: the layout decided for the CPU or CUDA, and settings that exclude each other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import PIPELINED_BATCH, WORKER_BATCH, Layout, Settings


def test_the_layout_decodes_on_one_thread_model_workers_on_the_cpu_and_before_the_batcher_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.settings.available_cpus", lambda: 4)
    cpu = Settings(intra_op_threads=4).layout(cuda=False)
    assert cpu == Layout(decode_on_model_threads=True, model_workers=4, max_batch_size=WORKER_BATCH, intra_op_threads=1)
    assert Settings(intra_op_threads=4).layout(cuda=True) == Layout(False, 1, PIPELINED_BATCH, 4)
    assert Settings(intra_op_threads=4, decode_processes=2).layout(cuda=False) == Layout(
        False, 1, PIPELINED_BATCH, 4, decode_processes=2
    )
    chosen = Settings(intra_op_threads=4, decode_on_model_threads=False, model_workers=2, max_batch_size=8)
    assert chosen.layout(cuda=False) == Layout(False, 2, 8, 2)
    on_cuda = Settings(intra_op_threads=6, decode_on_model_threads=True, model_workers=3).layout(cuda=True)
    assert on_cuda == Layout(True, 3, WORKER_BATCH, 2)
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings(decode_on_model_threads=True, decode_processes=2)


def test_on_cuda_a_many_core_host_decodes_in_processes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an H200's 16 cores, 14 decode processes served profile A 1.55x faster than threads (decision 0015)."""
    for cpus, processes in ((2, 0), (7, 0), (8, 6), (16, 14)):
        monkeypatch.setattr("app.settings.available_cpus", lambda cpus=cpus: cpus)
        assert Settings(intra_op_threads=2).layout(cuda=True).decode_processes == processes, cpus
        assert Settings(intra_op_threads=2).layout(cuda=False).decode_processes == 0  # the CPU keeps its layout
    assert Settings(decode_processes=0).layout(cuda=True).decode_processes == 0  # asked for threads
    assert Settings(decode_processes=3).layout(cuda=True).decode_processes == 3
    on_model_threads = Settings(decode_on_model_threads=True).layout(cuda=True)
    assert on_model_threads.decode_on_model_threads and on_model_threads.decode_processes == 0

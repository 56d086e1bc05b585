"""Seeds, devices and threads."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch

from ldmpipe import runtime
from ldmpipe.config import ConfigError


def test_stage_seed_is_stable_across_processes():
    code = "from ldmpipe.runtime import stage_seed; print(stage_seed(0, 'sample/7'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(other) == runtime.stage_seed(0, "sample/7")
    assert runtime.stage_seed(0, "a") != runtime.stage_seed(0, "b") != runtime.stage_seed(1, "b")
    assert 0 <= runtime.stage_seed(123, "x") < 2**63


def test_generators_per_purpose_are_independent_and_repeatable():
    a = torch.randn(4, generator=runtime.generator(0, "train"))
    assert torch.equal(a, torch.randn(4, generator=runtime.generator(0, "train")))
    assert not torch.equal(a, torch.randn(4, generator=runtime.generator(0, "eval")))


def test_auto_device_and_explicit_cpu():
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert runtime.select_device("cpu") == torch.device("cpu")
    assert runtime.select_device("auto").type == expected


def test_auto_prefers_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.select_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.select_device("auto").type in {"mps", "cpu"}


def test_cpu_tensors_stay_put_and_attention_is_unrestricted_on_cpu():
    x = torch.arange(6)
    assert runtime.to_device(x, torch.device("cpu")) is x and runtime.resident(x, torch.device("cpu")) is x
    assert isinstance(runtime.deterministic_attention(torch.device("cpu")), contextlib.nullcontext)


def test_attention_uses_the_math_backend_on_cuda_when_deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        assert not isinstance(runtime.deterministic_attention(torch.device("cuda")), contextlib.nullcontext)
        torch.use_deterministic_algorithms(False)
        assert isinstance(runtime.deterministic_attention(torch.device("cuda")), contextlib.nullcontext)
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)


def test_threads_are_shared_among_data_parallel_processes(monkeypatch):
    monkeypatch.setenv("LDMPIPE_NUM_THREADS", "5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    before = torch.get_num_threads()
    try:
        runtime.setup("cpu")
        assert torch.get_num_threads() == 2
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="device is 'cuda:1' but CUDA is not available here"):
        runtime.select_device("cuda:1")


def test_thread_override(monkeypatch):
    monkeypatch.setenv("LDMPIPE_NUM_THREADS", "3")
    assert runtime.num_threads() == 3
    monkeypatch.setenv("LDMPIPE_NUM_THREADS", "zero")
    with pytest.raises(ConfigError, match="LDMPIPE_NUM_THREADS must be a positive integer, got 'zero'"):
        runtime.num_threads()

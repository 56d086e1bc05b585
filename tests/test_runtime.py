"""Seeds, devices and threads."""

from __future__ import annotations

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
    expected = "cuda" if torch.cuda.is_available() else None
    assert runtime.select_device("cpu") == torch.device("cpu")
    assert runtime.select_device("auto").type in {expected or "cpu", "mps", "cpu"}


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

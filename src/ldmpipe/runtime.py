"""Devices, threads and seeds: everything that decides whether two runs give the same bytes."""

from __future__ import annotations

import hashlib
import os

import torch

from .config import ConfigError


def stage_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed per (global seed, purpose); unlike ``hash()``, the same in every process."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator for one purpose; draw on CPU and move to the device, so results match everywhere."""
    return torch.Generator().manual_seed(stage_seed(seed, name))


def num_threads() -> int:
    """Intra-op threads: ``LDMPIPE_NUM_THREADS`` or the CPUs this process may use.

    Set explicitly (not from OMP_NUM_THREADS, which engines set differently) because CPU kernels
    reduce in a thread-count dependent order: the same count gives the same bytes.
    """
    env = os.environ.get("LDMPIPE_NUM_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"LDMPIPE_NUM_THREADS must be a positive integer, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def select_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device is {spec!r} but CUDA is not available here; use auto or cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device is {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device is 'mps' but MPS is not available here; use auto or cpu")
    return torch.device(spec)


def setup(device_spec: str) -> torch.device:
    """Deterministic kernels, fixed thread count, and the chosen device."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(num_threads())
    # Flush subnormal floats to zero on CPU: tiny gradients and Adam moments otherwise become
    # subnormals, which x86 CPUs process 10-100x slower (seen here: 5x slower training).
    torch.set_flush_denormal(True)
    return select_device(device_spec)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU results stay float32 and exact)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")

"""Devices, threads and seeds: everything that decides whether two runs give the same bytes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError


# --- data parallelism: a rank's slice of each global batch (process groups: ldmpipe.distributed) ---


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` data-parallel processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes outputs, curves and resumable state."""
        return self.rank == 0

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (B, ...) -> (B / world, ...)."""
        n = batch.shape[0] // self.world
        return batch if self.world == 1 else batch[self.rank * n : (self.rank + 1) * n]

    def randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """N(0, I) noise of a local batch ``shape`` (b, ...): drawn for the global batch (world * b, ...)
        on the CPU and sliced, so each sample's noise does not depend on the number of processes."""
        full = torch.randn((shape[0] * self.world, *shape[1:]), generator=generator, dtype=torch.float32)
        return self.take(full)

    def randint(self, high: int, size: int, generator: torch.Generator | None) -> torch.Tensor:
        """Integers U{0..high-1} for a local batch of ``size``, drawn for the global batch and sliced."""
        return self.take(torch.randint(0, high, (size * self.world,), generator=generator, dtype=torch.long))


WHOLE = Shard()  # a single process: the whole batch


def gather(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """The global batch (world * b, ...) from each rank's slice (b, ...), in rank order (no gradient)."""
    if shard.world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(shard.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def stage_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed per (global seed, purpose); unlike ``hash()``, the same in every process."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator for one purpose; draw on CPU and move to the device, so results match everywhere."""
    return torch.Generator().manual_seed(stage_seed(seed, name))


def num_threads() -> int:
    """Intra-op threads of a stage: ``LDMPIPE_NUM_THREADS`` (Snakemake passes the rule's
    ``{threads}``) or the CPUs this process may use.  A data-parallel stage shares them among its
    processes (``setup``).

    Set explicitly (not from OMP_NUM_THREADS, which engines and torchrun set differently) because
    CPU kernels reduce in a thread-count dependent order: the same count gives the same bytes, so
    on CPU the thread count is part of an artifact's identity.
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


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a multi-process CUDA run, else ``device``."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def setup(device_spec: str) -> torch.device:
    """Deterministic kernels, fixed thread count, TF32 off, and the chosen device.

    Under torchrun, each of the N processes takes ``num_threads() // N`` threads (at least one)
    and, on CUDA, the GPU of its local rank; ``distributed.init`` joins the process group.

    Precision policy on CUDA: float32 matmuls and cuDNN convolutions run in full float32 (TF32
    off; torch enables TF32 for cuDNN convolutions by default), so a float32 run means float32
    everywhere; the fast path is explicit, bf16 autocast (``train.bf16``).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    world = int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(max(1, num_threads() // world))
    # Flush subnormal floats to zero on CPU: tiny gradients and Adam moments otherwise become
    # subnormals, which x86 CPUs process 10-100x slower (seen here: 5x slower training).
    torch.set_flush_denormal(True)
    device = local_device(select_device(device_spec))
    if device.type == "cuda":  # cuda:N becomes the current device: its RNG is the one a resume restores
        torch.cuda.set_device(device)
    return device


def to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A CPU tensor on ``device``; to CUDA through pinned memory without blocking the host (the
    caching host allocator keeps the pinned block alive until the copy is done). With ``dtype``, cast
    where ``x`` is, before the copy: float64 tables reach MPS, which has no float64, as float32."""
    if dtype is not None:
        x = x.to(dtype)
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def resident(x: torch.Tensor, device: torch.device, limit_bytes: int = 2**30) -> torch.Tensor:
    """A dataset that fits (``limit_bytes``, 1 GiB) lives on the device: batches are indexed there,
    with no copy per step; a larger one stays in pinned CPU memory (use ``to_device`` per batch)."""
    if device.type != "cuda":
        return x
    return x.to(device) if x.numel() * x.element_size() <= limit_bytes else x.pin_memory()


def deterministic_attention(device: torch.device):
    """SDPA restricted to the math backend on CUDA while deterministic algorithms are on: the flash
    and memory-efficient backends have non-deterministic backward passes (atomic adds), which
    ``warn_only`` would let through with a warning.  Elsewhere (CPU) a no-op."""
    import contextlib

    if device.type != "cuda" or not torch.are_deterministic_algorithms_enabled():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU results stay float32 and exact)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")

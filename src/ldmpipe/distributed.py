"""Data-parallel training under ``torchrun``: joining the process group, DistributedDataParallel,
and the few collective operations the training loop needs (a rank's slice of each batch and its
random draws: ``runtime.Shard``).

A run with N processes trains the same model as a run with one: the global batch stays
``batch_size`` (each rank takes a contiguous, equal slice of it), every rank draws the random
numbers of the *whole* batch from the same generator and keeps its slice (so sample i gets the
same timestep and noise for any N), and DistributedDataParallel averages the gradients.  Only the
order of the gradient sums differs.  With one process nothing here communicates, and the random
draws are the very calls of a single-process run, so its bytes do not change.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError
from .runtime import WHOLE, Shard, gather  # noqa: F401  (re-exported: one import for the stages)


def from_env() -> Shard:
    """The shard that ``torchrun`` describes in RANK / WORLD_SIZE (the whole batch without them)."""
    return Shard(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def init(device: torch.device, nproc: int) -> Shard:
    """Join the process group (gloo on CPU, NCCL on CUDA) if launched by torchrun; one process otherwise.

    ``nproc`` (``train.nproc``) must equal the number of processes: it is part of the result's
    identity.  On CUDA, local rank k uses GPU k (of those that CUDA_VISIBLE_DEVICES shows).
    """
    shard = from_env()
    if shard.world > 1:
        die_with_launcher()
    if shard.world != nproc:
        raise ConfigError(f"train.nproc is {nproc} but {shard.world} process(es) were started; "
                          f"set train.nproc: {shard.world} or run without torchrun (ldmpipe launches it)")  # fmt: skip
    if shard.world == 1 or dist.is_initialized():
        return shard
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return shard


LAUNCHER_ENV = "LDMPIPE_LAUNCHER_PID"


def die_with_launcher() -> None:
    """Let a SIGKILL of the launcher reach this worker (Linux).

    torchrun starts each worker in a session of its own, so ``kill -9`` of the launcher's process
    group (what DVC and Snakemake receive) would leave the workers running, writing outputs after
    the run was killed.  The kernel sends SIGKILL to this process when its parent dies instead."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    launcher = os.environ.get(LAUNCHER_ENV)
    if launcher and os.getppid() != int(launcher):  # the launcher died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def wrap(model: nn.Module, shard: Shard) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes; ``model`` otherwise.

    Buffers are not synchronised at each forward: every rank updates them identically (``gather``).
    """
    if shard.world == 1:
        return model
    # 1x1 convolutions after a transpose get gradients in another memory layout than DDP's bucket
    # views: DDP warns (a copy, not an error) on the first backward
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    return ddp(model, device_ids=ids, **{no_sync: False})  # torch < 2.10: broadcast_buffers


def barrier(shard: Shard) -> None:
    if shard.world > 1:
        dist.barrier()


def mean(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Mean over ranks of a tensor (its own value with one process)."""
    if shard.world == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / shard.world


def minimum(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    if shard.world == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return x


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

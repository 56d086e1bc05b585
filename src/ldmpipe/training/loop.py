"""A generic, deterministic training loop: AdamW, linear warm-up, gradient clipping, EMA, resume.

The loop knows nothing of models or data: it calls ``loss_fn(step) -> (loss, logs)`` and reports
averaged logs every ``log_every`` steps through a callback.  Every random draw comes from
generators the caller seeds, so the same settings give the same weights; with a
``Checkpointing``, the whole state (those generators included) is saved every N steps and a
rerun continues from it, ending with the same bytes as an uninterrupted run.

Data-parallel (``shard.world`` > 1): the caller's loss runs through DistributedDataParallel on
its slice of the batch; every rank holds the same weights, optimiser and generators, and only
rank 0 logs and saves.  Logged values are averaged over ranks at logging steps.

The host waits for the device only at logging steps and checkpoint steps: losses and logs stay
tensors in between, and a non-finite loss is noted on the device and reported there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..distributed import WHOLE, Shard
from .resume import Checkpointing, load_state, restore, rng_state, save_state, set_rng_state, state_of


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the message names the step."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    ema_decay: float | None = None
    log_every: int = 50
    ema_snapshot_step: int | None = None  # keep a copy of the EMA weights after this step (`EMA.snapshot`)


class EMA:
    """Exponential moving average of weights (Polyak averaging), with the usual warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))`` so early averages are not dominated by init.

    ``snapshot_at``: after that many updates, a copy of the averaged weights is kept in ``snapshot`` (a
    state dict), saved and restored with the rest: the weights a run stopped at that step would end with,
    as nothing before it depends on the total number of steps (autoguidance's guide, Karras et al. 2024)."""

    def __init__(self, model: nn.Module, decay: float, snapshot_at: int | None = None):
        self.decay, self.snapshot_at = decay, snapshot_at
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0
        self.snapshot: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """e <- e + (1 - d) (p - e) for all parameters in one multi-tensor call; buffers copied."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        buffers = list(self.model.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(model.buffers()))
        if self.updates == self.snapshot_at:
            self.snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "updates": self.updates}
        return state if self.snapshot is None else {**state, "snapshot": self.snapshot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.snapshot = state.get("snapshot")


class BatchSampler(Iterator[torch.Tensor]):
    """Endless stream of index batches (B,) from reshuffled epochs; drops nothing, wraps epochs.

    Its state is the rest of the current epoch; the generator's state is saved by its owner
    (stages share one generator between batches and noise)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n < 1:
            raise ValueError("cannot draw batches from an empty dataset")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.buffer = torch.empty(0, dtype=torch.long)

    def __next__(self) -> torch.Tensor:
        while len(self.buffer) < self.batch_size:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.n, generator=self.generator)])
        batch, self.buffer = self.buffer[: self.batch_size], self.buffer[self.batch_size :]
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer = state["buffer"].clone()


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> BatchSampler:
    return BatchSampler(n, batch_size, generator)


def _all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _window_values(window: dict[str, list[Any]], shard: Shard) -> dict[str, list[float]]:
    """Each logged value per step of the window, averaged over ranks (the global batch's value, as
    the ranks' slices are equal): one device sync."""
    out = {}
    for k, values in window.items():
        # device tensors (floats after a resume), read back in one stacked copy and widened to float64 on the
        # CPU (MPS has no float64)
        tensors = [v.detach() for v in values if isinstance(v, torch.Tensor)]
        read = iter(torch.stack([v.to(tensors[-1].device) for v in tensors]).cpu().double().tolist() if tensors else ())
        per_step = torch.tensor([next(read) if isinstance(v, torch.Tensor) else float(v) for v in values], dtype=torch.float64)
        if shard.world > 1:
            per_step = distributed.mean(per_step.to(_comm_device()), shard)
        out[k] = per_step.cpu().tolist()
    return out


def _window_means(window: dict[str, list[Any]], shard: Shard) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in _window_values(window, shard).items()}


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


class _NonFinite:
    """The first step whose loss was NaN/Inf, recorded on the device (no sync), checked at sync points."""

    def __init__(self) -> None:
        self.step: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def note(self, step: int, loss: torch.Tensor) -> None:
        loss = loss.detach().float()
        if self.step is None:
            self.step = torch.zeros((), dtype=torch.long, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        first = (self.step == 0) & ~torch.isfinite(loss)
        self.step = torch.where(first, step, self.step)
        self.value = torch.where(first, loss, self.value)

    def found(self, shard: Shard) -> tuple[int, float] | None:
        if self.step is None:
            return None
        never = torch.iinfo(torch.long).max
        step = torch.where(self.step == 0, never, self.step)
        if shard.world > 1:
            step = distributed.minimum(step.to(_comm_device()), shard)
        step = int(step)
        if step == never:
            return None
        return step, (float(self.value) if int(self.step) == step else float("nan"))


def train_loop(
    model: nn.Module,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    settings: TrainSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
    checkpointing: Checkpointing | None = None,
    extra_state: dict[str, Any] | None = None,
    shard: Shard = WHOLE,
) -> EMA | None:
    """Run ``settings.steps`` optimiser steps on ``model``; return the EMA (if any).

    ``extra_state``: the caller's other stateful objects (generators, batch samplers, a
    discriminator and its optimiser), saved and restored with the loop's own state.
    ``shard``: this process among data-parallel ones; ``loss_fn`` must then run ``model``
    through ``distributed.wrap`` so that gradients are averaged.  Only rank 0 calls ``log``
    and saves state; every rank returns the same EMA.
    """
    s = settings
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / s.warmup_steps) if s.warmup_steps else 1.0)
    if s.ema_snapshot_step is not None and (s.ema_decay is None or not 0 < s.ema_snapshot_step <= s.steps):
        raise ValueError(f"an EMA snapshot needs an EMA and a step in 1..{s.steps}, got {s.ema_snapshot_step}")
    ema = EMA(model, s.ema_decay, s.ema_snapshot_step) if s.ema_decay is not None else None
    stateful = {"model": model, "optimizer": opt, "scheduler": sched, **({"ema": ema} if ema else {}), **(extra_state or {})}
    window: dict[str, list[float]] = {}
    history: list[tuple[int, dict[str, float]]] = []  # every logged window, replayed on resume
    start, saved = 0, None  # saved: (step, path) of the last good state
    ckpt = checkpointing
    log = log if shard.main else None
    if ckpt is not None and ckpt.path.exists():
        state = load_state(ckpt.path)
        for name, obj in stateful.items():
            restore(obj, state["objects"][name])
        set_rng_state(state["rng"])
        start, window, history = int(state["step"]), state["window"], [(int(k), m) for k, m in state["history"]]
        saved = (start, ckpt.path)
        if shard.main:
            print(f"{desc}: resuming from step {start} of {s.steps} ({ckpt.path})")
        for k, means in history:
            if log is not None:
                log(k, means)
    model.train()
    bad = _NonFinite()

    def check_finite() -> None:  # a sync point: only at logging and checkpoint steps
        if (found := bad.found(shard)) is not None:
            last = f"last good state: {saved[1]} (step {saved[0]})" if saved else "no state saved yet (train.checkpoint_every)"
            raise NonFiniteLossError(f"loss is {found[1]} at step {found[0]}; {last}; lower the learning rate")

    bar = tqdm(range(start + 1, s.steps + 1), desc=desc, mininterval=2.0, dynamic_ncols=True, initial=start,
               total=s.steps, disable=not shard.main)  # fmt: skip
    for step in bar:
        # 1. forward: the caller's loss on its own batch (slice)
        loss, logs = loss_fn(step)
        bad.note(step, loss)
        # 2. backward (DDP averages the gradients over ranks), clip, update, average
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip is not None:
            logs["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        # 3. log the window's mean
        for k, v in logs.items():
            window.setdefault(k, []).append(v)
        if step % s.log_every == 0 or step == s.steps:
            check_finite()
            means = _window_means(window, shard)
            means["lr"] = sched.get_last_lr()[0]
            bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", refresh=False)  # redrawn with the step count
            if log is not None:
                log(step, means)
            history.append((step, means))
            window = {}
        # 4. save the resumable state (only if the weights are still finite: a good state); rank 0
        #    writes it, every rank waits, so no rank runs ahead of the last saved step
        if ckpt is not None and ckpt.every and step % ckpt.every == 0 and step < s.steps:
            check_finite()
            if _all_finite(model):
                values = _window_values(window, shard)  # a collective: every rank takes part
                if shard.main:
                    state = {"step": step, "window": values,
                             "history": [[k, m] for k, m in history], "rng": rng_state(),
                             "objects": {name: state_of(obj) for name, obj in stateful.items()}}  # fmt: skip
                    save_state(ckpt.path, state)
                distributed.barrier(shard)
                saved = (step, ckpt.path)
    check_finite()
    model.eval()
    return ema

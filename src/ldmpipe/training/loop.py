"""A generic, deterministic training loop: AdamW, linear warm-up, gradient clipping, EMA, resume.

The loop knows nothing of models or data: it calls ``loss_fn(step) -> (loss, logs)`` and reports
averaged logs every ``log_every`` steps through a callback.  Every random draw comes from
generators the caller seeds, so the same settings give the same weights; with a
``Checkpointing``, the whole state (those generators included) is saved every N steps and a
rerun continues from it, ending with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

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


class EMA:
    """Exponential moving average of weights (Polyak averaging), with the usual warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))`` so early averages are not dominated by init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


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
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train_loop(
    model: nn.Module,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    settings: TrainSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
    checkpointing: Checkpointing | None = None,
    extra_state: dict[str, Any] | None = None,
) -> EMA | None:
    """Run ``settings.steps`` optimiser steps on ``model``; return the EMA (if any).

    ``extra_state``: the caller's other stateful objects (generators, batch samplers, a
    discriminator and its optimiser), saved and restored with the loop's own state.
    """
    s = settings
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / s.warmup_steps) if s.warmup_steps else 1.0)
    ema = EMA(model, s.ema_decay) if s.ema_decay is not None else None
    stateful = {"model": model, "optimizer": opt, "scheduler": sched, **({"ema": ema} if ema else {}), **(extra_state or {})}
    window: dict[str, list[float]] = {}
    history: list[tuple[int, dict[str, float]]] = []  # every logged window, replayed on resume
    start, saved = 0, None  # saved: (step, path) of the last good state
    ckpt = checkpointing
    if ckpt is not None and ckpt.path.exists():
        state = load_state(ckpt.path)
        for name, obj in stateful.items():
            restore(obj, state["objects"][name])
        set_rng_state(state["rng"])
        start, window, history = int(state["step"]), state["window"], [(int(k), m) for k, m in state["history"]]
        saved = (start, ckpt.path)
        print(f"{desc}: resuming from step {start} of {s.steps} ({ckpt.path})")
        for k, means in history:
            if log is not None:
                log(k, means)
    model.train()
    bar = tqdm(range(start + 1, s.steps + 1), desc=desc, mininterval=2.0, dynamic_ncols=True, initial=start, total=s.steps)
    for step in bar:
        # 1. forward: the caller's loss on its own batch
        loss, logs = loss_fn(step)
        if not math.isfinite(loss.item()):
            last = f"last good state: {saved[1]} (step {saved[0]})" if saved else "no state saved yet (train.checkpoint_every)"
            raise NonFiniteLossError(f"{desc}: loss is {loss.item()} at step {step}; {last}; lower the learning rate")
        # 2. backward, clip, update, average
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip is not None:
            logs["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip))
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        # 3. log the window's mean
        for k, v in logs.items():
            window.setdefault(k, []).append(v)
        if step % s.log_every == 0 or step == s.steps:
            means = {k: sum(v) / len(v) for k, v in window.items()}
            means["lr"] = sched.get_last_lr()[0]
            bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}")
            if log is not None:
                log(step, means)
            history.append((step, means))
            window = {}
        # 4. save the resumable state (only if the weights are still finite: a good state)
        if ckpt is not None and ckpt.every and step % ckpt.every == 0 and step < s.steps and _all_finite(model):
            state = {"step": step, "window": window, "history": [[k, m] for k, m in history], "rng": rng_state(),
                     "objects": {name: state_of(obj) for name, obj in stateful.items()}}  # fmt: skip
            save_state(ckpt.path, state)
            saved = (step, ckpt.path)
    model.eval()
    return ema

"""A generic, deterministic training loop: AdamW, linear warm-up, gradient clipping, EMA.

The loop knows nothing of models or data: it calls ``loss_fn(step) -> (loss, logs)`` and reports
averaged logs every ``log_every`` steps through a callback.  Every random draw comes from
generators the caller seeds, so the same settings give the same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm


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


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless stream of index batches (B,) from reshuffled epochs; drops nothing, wraps epochs."""
    if n < 1:
        raise ValueError("cannot draw batches from an empty dataset")
    buffer = torch.empty(0, dtype=torch.long)
    while True:
        while len(buffer) < batch_size:
            buffer = torch.cat([buffer, torch.randperm(n, generator=generator)])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def train_loop(
    model: nn.Module,
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    settings: TrainSettings,
    *,
    log: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
) -> EMA | None:
    """Run ``settings.steps`` optimiser steps on ``model``; return the EMA (if any)."""
    s = settings
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / s.warmup_steps) if s.warmup_steps else 1.0)
    ema = EMA(model, s.ema_decay) if s.ema_decay is not None else None
    model.train()
    window: dict[str, list[float]] = {}
    bar = tqdm(range(1, s.steps + 1), desc=desc, mininterval=2.0, dynamic_ncols=True)
    for step in bar:
        # 1. forward: the caller's loss on its own batch
        loss, logs = loss_fn(step)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"{desc}: loss is {loss.item()} at step {step}; lower the learning rate")
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
            window.clear()
    model.eval()
    return ema

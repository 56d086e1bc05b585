"""The reverse-process loop: x_T ~ N(0, I), then one `sampler.step` per timestep."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from .noise import GeneratorArg, randn_per_sample


def sample_loop(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler,
    shape: Sequence[int],
    generators: GeneratorArg,
    device: torch.device | str,
    progress: bool = True,
) -> torch.Tensor:
    """Draw samples (B, C, H, W) float32 on `device` with a sampler whose `set_timesteps` was called.

    `generators`: B per-sample generators (see `sample_generators`) so sample i does not depend on
    the batch size, a single generator, or None. `model(x, t)` gets t as an int64 (B,) tensor.
    """
    if getattr(sampler, "timesteps", None) is None:
        raise ValueError("call sampler.set_timesteps(n) before sample_loop")
    shape = tuple(int(s) for s in shape)
    B = shape[0]
    # 1. x_T ~ N(0, I): (B, C, H, W), row i from generators[i] on CPU, then moved to device
    x = randn_per_sample(shape, generators, dtype=torch.float32, device=device)
    with torch.no_grad():
        for t in tqdm(sampler.timesteps, desc="sampling", file=sys.stderr, disable=not progress):
            # 2. eps_theta(x_t, t): (B, C, H, W)
            t_batch = torch.full((B,), int(t), dtype=torch.int64, device=x.device)
            eps = model(x, t_batch).to(torch.float32)
            # 3. x_t -> x_{prev_t}
            x = sampler.step(eps, int(t), x, generator=generators)
    return x

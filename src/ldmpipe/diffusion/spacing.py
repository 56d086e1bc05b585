"""Timestep spacings: which n of the T training timesteps a sampler visits (Lin et al. 2024, Table 2).

The grids are diffusers' (`timestep_spacing`), computed in exact rational arithmetic with round half to
even, so there are always n distinct descending int64 timesteps. diffusers computes them in floating
point, which at exact .5 ties can round the other way (trailing, T = 1000, n = 48: diffusers has 936
where round(937.5) - 1 = 937) and for trailing sometimes yields n + 1 steps (T = 1000, n = 61);
elsewhere the two agree.

A sampler also takes a grid of its own (diffusers' `set_timesteps(timesteps=[...])`, e.g. the "Align Your
Steps" schedules of Sabour et al. 2024): `check_timesteps` validates it.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import torch

from ..constants import SPACINGS, grid_points  # shared with config validation
from .schedule import check_num_steps


def check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return spacing


def spaced_timesteps(spacing: str, num_timesteps: int, num_steps: int, *, skip_zero: bool = False) -> torch.Tensor:
    """(n,) int64 descending timesteps in [0, T-1]. With m = n grid points:

    leading:  k * (T // m),               k = m-1, ..., 0  (ends at 0, starts at most at T - T // m)
    trailing: round(T (n - i) / n) - 1,   i = 0, ..., n-1  (starts at T - 1, ends at round(T / n) - 1)
    linspace: round((T - 1) k / (m - 1)), k = m-1, ..., 0  (both ends; m = 1 gives [0])

    `skip_zero` gives DPM-Solver's grids (diffusers' DPMSolverMultistepScheduler), whose last step goes to
    sigma = 0 instead of evaluating the model at t = 0: leading and linspace take m = n + 1 points and drop
    the final 0 (so n <= T - 1); trailing is unchanged.
    """
    T, n = num_timesteps, check_num_steps(num_steps, num_timesteps)
    check_spacing(spacing)
    m = grid_points(n, spacing, skip_zero)
    if m > T:
        raise ValueError(f"{spacing} spacing allows at most {T - 1} steps here, got {n}")
    if spacing == "leading":
        ts = [k * (T // m) for k in range(m - 1, -1, -1)]
    elif spacing == "trailing":
        ts = [round(Fraction(T * (n - i), n)) - 1 for i in range(n)]
    else:
        ts = [round(Fraction((T - 1) * k, m - 1)) for k in range(m - 1, -1, -1)] if m > 1 else [0]
    return torch.tensor(ts[:n], dtype=torch.int64)


def check_timesteps(timesteps, num_timesteps: int) -> torch.Tensor:
    """A caller's grid as (n,) int64: non-empty, integer, strictly descending, within [0, T-1]. Each sampler
    treats it as it treats a spaced grid (DPM-Solver++ and Heun then step to sigma = 0, as diffusers' do)."""
    values = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
    if not values:
        raise ValueError("timesteps must list at least one timestep")
    integral = (isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) and t == int(t) for t in values)
    if not all(integral):
        raise ValueError(f"timesteps must be integers, got {values}")
    ts = [int(t) for t in values]
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {ts}")
    if not 0 <= ts[-1] <= ts[0] <= num_timesteps - 1:
        raise ValueError(f"timesteps must lie in [0, {num_timesteps - 1}], got {ts[0]}..{ts[-1]}")
    return torch.tensor(ts, dtype=torch.int64)

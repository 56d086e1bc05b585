"""Stage ``sweep_reference``: the sweep's reference row, DDPM with all T steps.

Ancestral sampling on every training timestep is the model's own reverse process (Ho et al. 2020,
Algorithm 2), so its FID is what the model has learnt, without a sampler's shortcut: a fast sampler far
below it is exploiting an artefact, far above it is losing to its shortcut.  ``sweep.reference_steps``
may ask for fewer steps where T is too slow; they are then spaced ``trailing`` (starting at t = T-1, as
the full process does) and the label says so.
"""

from __future__ import annotations

import argparse

from ..config import Params
from .sweep import add_io_arguments, autoguided, load, measure, write


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_io_arguments(p)


def reference_label(steps: int, timesteps: int) -> str:
    if steps == timesteps:
        return f"reference: DDPM, all {timesteps} steps"
    return f"reference: DDPM, {steps} trailing steps (not all T = {timesteps})"


def run(args: argparse.Namespace, params: Params) -> None:
    m = load(args, params)
    timesteps = m.extra["diffusion"]["timesteps"]
    steps = params.sweep.reference_steps or timesteps
    # with all T steps every spacing visits T-1, ..., 0: trailing names the grid of either case
    label = reference_label(steps, timesteps) + autoguided(params)  # guided as every row (sample.*)
    write(args, *measure(m, params, "ddpm", "trailing", (steps,), label, reference=True))

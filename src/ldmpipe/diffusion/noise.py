"""Per-sample random numbers: sample i depends only on its own seed, never on the batch size.

Row i of a (B, ...) tensor is drawn from generators[i] on the CPU (the same scheme as diffusers'
`randn_tensor` with a list of CPU generators), then moved to the target device, so results are
identical across batch sizes and devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed, seeded with `manual_seed`."""
    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def randn_per_sample(
    shape: Sequence[int],
    generators: GeneratorArg,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal tensor of `shape` = (B, ...).

    `generators`: a sequence of B generators (row i from generators[i], drawn on CPU), a single
    generator (whole tensor drawn from it, on its own device), or None (global CPU RNG).
    """
    shape = tuple(int(s) for s in shape)
    if generators is None:
        out = torch.randn(shape, dtype=dtype)
    elif isinstance(generators, torch.Generator):
        out = torch.randn(shape, generator=generators, dtype=dtype, device=generators.device)
    else:
        gens = list(generators)
        if not shape or len(gens) != shape[0]:
            raise ValueError(f"got {len(gens)} generators for a batch of shape {shape}")
        row = (1,) + shape[1:]
        rows = [torch.randn(row, generator=g, dtype=dtype, device="cpu") for g in gens]
        out = torch.cat(rows, dim=0) if rows else torch.empty(shape, dtype=dtype)
    return out.to(device) if device is not None else out

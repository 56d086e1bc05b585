"""Diffusion library: noise schedules, training loss, samplers and the sampling loop.

Plain arguments only: nothing here knows pipeline paths or reads params.yaml.  Names are
re-exported lazily (PEP 562), so importing one submodule (say ``schedule`` for training) does not
import the samplers: each pipeline stage depends only on the code it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DDIMSampler": "ddim",
    "DDPMSampler": "ddpm",
    "epsilon_loss": "loss",
    "randn_per_sample": "noise",
    "sample_generators": "noise",
    "sample_loop": "sampling",
    "SCHEDULES": "schedule",
    "NoiseSchedule": "schedule",
    "make_betas": "schedule",
}

__all__ = ["SAMPLERS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "SAMPLERS":  # sampler name in params.yaml -> class
        return {"ddpm": __getattr__("DDPMSampler"), "ddim": __getattr__("DDIMSampler")}
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

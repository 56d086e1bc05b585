"""Diffusion library: noise schedules, parameterisations, training loss, samplers and the sampling loop.

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
    "DPMSolverPPSampler": "dpm_solver",
    "SDEDPMSolverPPSampler": "dpm_solver",
    "HeunSampler": "heun",
    "Sampler": "base",
    "diffusion_loss": "loss",
    "AutoGuidedModel": "guidance",
    "GuidedModel": "guidance",
    "drop_labels": "guidance",
    "guide": "guidance",
    "sample_classes": "guidance",
    "min_snr_weights": "loss",
    "prediction_weights": "loss",
    "timestep_proposal": "loss",
    "randn_per_sample": "noise",
    "sample_generators": "noise",
    "PREDICTIONS": "parameterization",
    "predict_eps": "parameterization",
    "predict_x0": "parameterization",
    "training_target": "parameterization",
    "sample_loop": "sampling",
    "SCHEDULES": "schedule",
    "NoiseSchedule": "schedule",
    "make_betas": "schedule",
    "rescale_to_zero_terminal_snr": "schedule",
    "shift_snr": "schedule",
    "SPACINGS": "spacing",
    "spaced_timesteps": "spacing",
}

# sampler name in params.yaml -> class name
_SAMPLERS = {
    "ddpm": "DDPMSampler",
    "ddim": "DDIMSampler",
    "dpm_solver_pp": "DPMSolverPPSampler",
    "dpm_solver_pp_sde": "SDEDPMSolverPPSampler",
    "heun": "HeunSampler",
}

__all__ = ["SAMPLERS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "SAMPLERS":  # sampler name in params.yaml -> class
        return {key: __getattr__(cls) for key, cls in _SAMPLERS.items()}
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

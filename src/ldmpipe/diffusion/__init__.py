"""Diffusion library: noise schedules, training loss, samplers and the sampling loop.

Plain arguments only: nothing here knows pipeline paths or reads params.yaml.
"""

from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .loss import epsilon_loss
from .noise import randn_per_sample, sample_generators
from .sampling import sample_loop
from .schedule import SCHEDULES, NoiseSchedule, make_betas

SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "DDIMSampler",
    "DDPMSampler",
    "NoiseSchedule",
    "epsilon_loss",
    "make_betas",
    "randn_per_sample",
    "sample_generators",
    "sample_loop",
]

"""DDIM sampler (Song et al. 2021), epsilon prediction, eq. 12 with sigma_t(eta) of eq. 16.

Equivalent to diffusers' `DDIMScheduler(clip_sample=False, prediction_type="epsilon",
set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing)`. eta = 0 is the deterministic
DDIM; eta = 1 is DDPM's fixed-small ancestral sampler on the same sub-sequence.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from .noise import GeneratorArg, randn_per_sample
from .schedule import NoiseSchedule, check_num_steps

SPACINGS = ("leading", "trailing")


class DDIMSampler:
    """Generalised (non-Markovian) reverse process of Song et al. 2021."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, spacing: str = "leading") -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"expected a NoiseSchedule, got {type(schedule).__name__}")
        eta = float(eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
        self.schedule = schedule
        self.eta = eta
        self.spacing = spacing
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Descending int64 timesteps.

        leading:  arange(0, n) * (T // n), reversed (diffusers' default).
        trailing: round(T - i * T / n) - 1 for i = 0..n-1 (diffusers' round(arange(T, 0, -T/n)) - 1,
                  computed exactly so there are always n steps and ties round half-to-even).
        """
        T = self.schedule.num_timesteps
        n = check_num_steps(num_inference_steps, T)
        if self.spacing == "leading":
            ts = torch.arange(0, n, dtype=torch.int64) * (T // n)
            ts = ts.flip(0)
        else:
            ts = torch.tensor([round(Fraction(T * (n - i), n)) - 1 for i in range(n)], dtype=torch.int64)
        self.num_inference_steps = n
        self.timesteps = ts

    def previous_timestep(self, t: int) -> int:
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(n) before step()")
        return t - self.schedule.num_timesteps // self.num_inference_steps

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{prev_t}. model_output = eps_theta(x_t, t), sample = x_t, both (B, C, H, W).

        `generator` (a generator, a list of B per-sample generators, or None) is used only if eta > 0.
        """
        t = int(t)
        prev_t = self.previous_timestep(t)
        if not 0 <= t < self.schedule.num_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.schedule.num_timesteps - 1}]")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        abars = self.schedule.alphas_cumprod  # (T,) float64

        # 1. Scalars (float64): abar_t and abar_prev, with abar = 1 past the end (set_alpha_to_one).
        #    (Song et al. write alpha_t for our abar_t.)
        abar_t = float(abars[t])
        abar_prev = float(abars[prev_t]) if prev_t >= 0 else 1.0

        # 2. "Predicted x_0" of eq. 12: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), (B, C, H, W). No clipping.
        x0_hat = (sample - math.sqrt(1.0 - abar_t) * model_output) / math.sqrt(abar_t)

        # 3. sigma_t(eta) of eq. 16: eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev).
        sigma = self.eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))

        # 4. "Direction pointing to x_t" of eq. 12: sqrt(1 - abar_prev - sigma^2) eps, (B, C, H, W).
        direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * model_output

        # 5. Eq. 12: x_prev = sqrt(abar_prev) x0_hat + direction + sigma z,  z ~ N(0, I).
        prev = math.sqrt(abar_prev) * x0_hat + direction
        if sigma > 0.0:
            z = randn_per_sample(sample.shape, generator, dtype=sample.dtype, device=sample.device)
            prev = prev + sigma * z
        return prev

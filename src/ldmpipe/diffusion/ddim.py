"""DDIM sampler (Song et al. 2021), eq. 12 with sigma_t(eta) of eq. 16.

Equivalent to diffusers' `DDIMScheduler(clip_sample=False, prediction_type=prediction,
set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing)` for leading spacing, and for trailing
when n divides T. eta = 0 is the deterministic DDIM; eta = 1 is DDPM's fixed-small ancestral sampler on
the same sub-sequence.

Where a step lands: ours steps from t to the next entry of `timesteps` (Song et al.'s sub-sequence tau).
diffusers' DDIM uses t - T // n instead, which is the same thing for leading spacing (and trailing with
n | T) but not for linspace (T = 1000, n = 10: 999 -> 899 where the next timestep is 888) or trailing
with n not dividing T; so ours is correct for every spacing and matches diffusers where diffusers is.
For linspace it is checked against diffusers' DDPM (eta = 1) and first-order DPM-Solver++ (eta = 0).
"""

from __future__ import annotations

import math

import torch

from .base import SingleStepSampler
from .noise import GeneratorArg, randn_per_sample
from .parameterization import predict_eps, predict_x0
from .schedule import NoiseSchedule


class DDIMSampler(SingleStepSampler):
    """Generalised (non-Markovian) reverse process of Song et al. 2021."""

    def __init__(
        self, schedule: NoiseSchedule, eta: float = 0.0, spacing: str = "leading", *, prediction: str = "epsilon"
    ) -> None:
        super().__init__(schedule, prediction=prediction, spacing=spacing)
        eta = float(eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.eta = eta

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{prev_t}. model_output = the network's output at (x_t, t), sample = x_t,
        both (B, C, H, W). `generator` (a generator, a list of B per-sample generators, or None) is used
        only if eta > 0.
        """
        t = self._check_step(model_output, t, sample)
        prev_t = self.previous_timestep(t)
        abars = self.schedule.alphas_cumprod  # (T,) float64

        # 1. Scalars (float64): abar_t and abar_prev, with abar = 1 past the end (set_alpha_to_one).
        #    (Song et al. write alpha_t for our abar_t.)
        abar_t = float(abars[t])
        abar_prev = float(abars[prev_t]) if prev_t >= 0 else 1.0

        # 2. "Predicted x_0" of eq. 12 and the noise it implies, (B, C, H, W); for epsilon prediction
        #    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t). No clipping.
        x0_hat = predict_x0(self.prediction, model_output, sample, abar_t)
        eps_hat = predict_eps(self.prediction, model_output, sample, abar_t)

        # 3. sigma_t(eta) of eq. 16: eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev).
        sigma = self.eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))

        # 4. "Direction pointing to x_t" of eq. 12: sqrt(1 - abar_prev - sigma^2) eps, (B, C, H, W).
        direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps_hat

        # 5. Eq. 12: x_prev = sqrt(abar_prev) x0_hat + direction + sigma z,  z ~ N(0, I).
        prev = math.sqrt(abar_prev) * x0_hat + direction
        if sigma > 0.0:
            z = randn_per_sample(sample.shape, generator, dtype=sample.dtype, device=sample.device)
            prev = prev + sigma * z
        return prev

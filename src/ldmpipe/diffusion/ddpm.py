"""DDPM ancestral sampler (Ho et al. 2020, Algorithm 2), epsilon prediction, fixed-small variance.

Equivalent to diffusers' `DDPMScheduler(variance_type="fixed_small", clip_sample=False,
prediction_type="epsilon", timestep_spacing="leading")`. With n < T steps it jumps t -> t - T//n,
using alpha-bar at both ends (a DDPM on the sub-sequence of timesteps).
"""

from __future__ import annotations

import math

import torch

from .noise import GeneratorArg, randn_per_sample
from .schedule import NoiseSchedule, check_num_steps


class DDPMSampler:
    """Stochastic reverse process p_theta(x_{t-1} | x_t) with sigma_t^2 = beta-tilde_t (eq. 7)."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"expected a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """"leading" spacing: timesteps = arange(0, n) * (T // n), descending, int64."""
        T = self.schedule.num_timesteps
        n = check_num_steps(num_inference_steps, T)
        self.num_inference_steps = n
        self.timesteps = (torch.arange(0, n, dtype=torch.int64) * (T // n)).flip(0)

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

        `generator`: a generator, a list of B per-sample generators, or None (global RNG).
        """
        t = int(t)
        prev_t = self.previous_timestep(t)
        if not 0 <= t < self.schedule.num_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.schedule.num_timesteps - 1}]")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} != sample shape {tuple(sample.shape)}")
        abars = self.schedule.alphas_cumprod  # (T,) float64

        # 1. Scalars (float64): abar_t, abar_prev (1 past the end), and the effective one-jump
        #    alpha_t = abar_t / abar_prev, beta_t = 1 - alpha_t.
        abar_t = float(abars[t])
        abar_prev = float(abars[prev_t]) if prev_t >= 0 else 1.0
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t

        # 2. Predicted x_0 by inverting eq. 4 (eq. 15): x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
        #    (B, C, H, W). No clipping.
        x0_hat = (sample - math.sqrt(1.0 - abar_t) * model_output) / math.sqrt(abar_t)

        # 3. Posterior mean mu-tilde_t(x_t, x0_hat) (eq. 7); together with step 2 this is eq. 11:
        #    mu = sqrt(abar_prev) beta_t / (1 - abar_t) * x0_hat + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) * x_t
        c_x0 = math.sqrt(abar_prev) * beta_t / (1.0 - abar_t)
        c_xt = math.sqrt(alpha_t) * (1.0 - abar_prev) / (1.0 - abar_t)
        mean = c_x0 * x0_hat + c_xt * sample  # (B, C, H, W)

        # 4. Ancestral noise with the fixed-small variance beta-tilde_t = (1 - abar_prev) / (1 - abar_t) beta_t
        #    (eq. 7, sigma_t^2 in eq. 6 / Algorithm 2); none at the final step (t = 0, prev_t < 0).
        if t > 0:
            var = max((1.0 - abar_prev) / (1.0 - abar_t) * beta_t, 1e-20)
            z = randn_per_sample(sample.shape, generator, dtype=sample.dtype, device=sample.device)
            mean = mean + math.sqrt(var) * z
        return mean

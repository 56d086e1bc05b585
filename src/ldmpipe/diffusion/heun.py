"""Heun's second-order method on the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 1,
deterministic: S_churn = 0).

Equivalent to diffusers' `HeunDiscreteScheduler(prediction_type=prediction, timestep_spacing=spacing)`.
The sampler works on the variance-exploding x = x_t / sqrt(abar_t) = x0 + sigma eps, sigma = sqrt((1 -
abar) / abar) (the schedule's `sigmas`), where the ODE is dx/dsigma = (x - D(x; sigma)) / sigma (eq. 1
with sigma(t) = t and the score (D - x) / sigma^2 of eq. 3), D the denoiser, i.e. the x0 prediction.
The network still sees the VP input x_t = x / sqrt(1 + sigma^2) (`scale_model_input`), and x_T =
`init_noise_sigma` * N(0, I).

Timesteps: n grid points t_0 > ... > t_{n-1} then sigma = 0. Each step but the last evaluates the model
twice (Euler predictor, then the trapezoidal corrector at t_{i+1}); the last is a plain Euler step to
sigma = 0, where the corrector is undefined. So `timesteps` = [t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}]
and nfe = 2n - 1. linspace is rounded to integer timesteps, where diffusers keeps fractional ones
(with sigma interpolated linearly in t); the two agree when n - 1 divides T - 1.
"""

from __future__ import annotations

import math

import torch

from .base import Sampler
from .noise import GeneratorArg
from .parameterization import predict_x0
from .schedule import NoiseSchedule


class HeunSampler(Sampler):
    """Two-stage deterministic sampler; `step` alternates predictor and corrector, like diffusers'."""

    def __init__(self, schedule: NoiseSchedule, *, prediction: str = "epsilon", spacing: str = "linspace") -> None:
        super().__init__(schedule, prediction=prediction, spacing=spacing)
        self._sigmas: list[float] = []  # sigma at t_0, ..., t_{n-1}, then 0
        self._pending: tuple[torch.Tensor, torch.Tensor, float, float] | None = None  # (x_i, d_i, sigma_i, sigma_next)

    def set_timesteps(self, num_inference_steps: int | None = None, *, timesteps=None) -> None:
        """The n grid points (the spacing's, or the caller's `timesteps`), each but the first listed twice."""
        grid = self._timestep_grid(num_inference_steps, timesteps)  # (n,)
        self._sigmas = self.schedule.sigmas[grid].tolist() + [0.0]
        self.timesteps = torch.cat([grid[:1], grid[1:].repeat_interleave(2)])  # (2n - 1,)
        self._pending = None

    @property
    def init_noise_sigma(self) -> float:
        """Std of x_T = x_{t_0} / sqrt(abar_{t_0}) for x_{t_0} ~ N(0, I): sqrt(sigma_0^2 + 1). (diffusers uses
        sigma_0 for linspace/trailing; the difference is 1 / (2 sigma_0^2) relative.)"""
        self._require_timesteps()
        return math.sqrt(self._sigmas[0] ** 2 + 1.0)

    def scale_model_input(self, sample: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """x -> x / sqrt(sigma_t^2 + 1) = sqrt(abar_t) x: the VP x_t the network was trained on."""
        sigma = float(self.schedule.sigmas[int(t)])
        return sample / ((sigma**2 + 1) ** 0.5)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The VE x = x0 + sigma_t eps this sampler works on (diffusers' Heun: the same), (B, C, H, W)."""
        return original + float(self.schedule.sigmas[int(t)]) * noise

    def set_begin_index(self, begin_index: int) -> None:
        """As `Sampler.set_begin_index`, at a predictor stage: an even position of `timesteps` (diffusers
        starts its img2img loops at `t_start * order`)."""
        if int(begin_index) % 2:
            raise ValueError(f"begin_index {begin_index} is a corrector stage; Heun starts at even positions")
        super().set_begin_index(begin_index)
        self._pending = None

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """One stage: predictor x_i -> Euler x_{i+1}, or corrector -> Heun x_{i+1}. model_output = the
        network's output at (scale_model_input(sample, t), t), sample = x, both (B, C, H, W). Steps must
        follow `timesteps` in order; `generator` is unused."""
        t = self._check_step(model_output, t, sample)
        position = self._advance(t)
        if self._pending is None:
            # 1. Predictor at sigma_i (Algorithm 1, lines 4-5): D = x0 prediction at the VP input,
            #    d_i = (x_i - D(x_i; sigma_i)) / sigma_i, x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i.
            i = position // 2  # predictor stages sit at even positions of `timesteps`
            sigma, sigma_next = self._sigmas[i], self._sigmas[i + 1]
            denoised = self._denoise(model_output, sample, sigma)
            d = (sample - denoised) / sigma
            if sigma_next > 0.0:
                self._pending = (sample, d, sigma, sigma_next)
            return sample + d * (sigma_next - sigma)
        # 2. Corrector at sigma_{i+1} > 0 (lines 6-8): d' = (x_{i+1} - D(x_{i+1}; sigma_{i+1})) / sigma_{i+1},
        #    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d') / 2.
        x_i, d, sigma, sigma_next = self._pending
        self._pending = None
        d_next = (sample - self._denoise(model_output, sample, sigma_next)) / sigma_next
        return x_i + (d + d_next) / 2 * (sigma_next - sigma)

    def _denoise(self, model_output: torch.Tensor, sample: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x; sigma): the x0 prediction from the output at the VP input sqrt(abar) x, abar = 1 / (1 + sigma^2)."""
        abar = 1.0 / (1.0 + sigma**2)
        return predict_x0(self.prediction, model_output, sample * math.sqrt(abar), abar)

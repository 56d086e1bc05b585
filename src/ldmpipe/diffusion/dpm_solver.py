"""DPM-Solver++(2M): multistep second-order solver of the diffusion ODE in data prediction (Lu et al. 2022),
and its SDE counterpart, SDE-DPM-Solver++(2M) (`SDEDPMSolverPPSampler`).

Equivalent to diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero", prediction_type=prediction,
timestep_spacing=spacing)`. Notation (Lu et al.): alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t),
lambda_t = log(alpha_t / sigma_t) (half the log-SNR), h_i = lambda_{t_i} - lambda_{t_{i-1}}.

The grid is the n timesteps followed by a final point with sigma = 0 (alpha = 1, lambda = +inf), so the
last step returns the data prediction; an abar of 0 (zero terminal SNR) is read as 2**-24, as in diffusers.
The first step has no history and the last has lambda = inf, so both are first order (= DDIM, eta = 0).

The SDE solver (the same solver on the reverse SDE, as diffusers' ``algorithm_type="sde-dpmsolver++"``)
keeps e^{-h} times less of x_s than the ODE step, moves the mean further toward the data prediction and
makes up the variance with fresh noise sigma_t sqrt(1 - e^{-2h}) z: errors of earlier steps are damped
instead of carried to the end (Karras et al. 2022, sec. 4), at the ODE's cost of one network pass per step.
"""

from __future__ import annotations

import math

import torch

from .base import Sampler
from .noise import GeneratorArg, randn_per_sample
from .parameterization import predict_x0
from .schedule import NoiseSchedule


class DPMSolverPPSampler(Sampler):
    """Deterministic multistep solver; `step` keeps the previous data prediction (history of length 1)."""

    def __init__(self, schedule: NoiseSchedule, *, prediction: str = "epsilon", spacing: str = "linspace") -> None:
        super().__init__(schedule, prediction=prediction, spacing=spacing)
        self._grid: list[tuple[float, float, float]] = []  # (alpha, sigma, lambda) per grid point
        self._history: tuple[torch.Tensor, float] | None = None  # (x0 at t_{i-1}, lambda_{t_{i-1}})

    def set_timesteps(self, num_inference_steps: int | None = None, *, timesteps=None) -> None:
        """n descending int64 timesteps, leading/linspace on an (n+1)-point grid without its final 0
        (see `spacing.spaced_timesteps(..., skip_zero=True)`), or the caller's `timesteps`; then a final
        sigma = 0."""
        self.timesteps = self._timestep_grid(num_inference_steps, timesteps, skip_zero=True)
        # alpha_t = 1 / sqrt(1 + s^2) and sigma_t = s alpha_t from the VE noise level s = sqrt((1 - abar) / abar)
        # (the schedule's one table of sigmas), lambda_t = -log s.
        s = self.schedule.sigmas[self.timesteps].tolist()
        self._grid = [(1.0 / math.sqrt(1.0 + x * x), x / math.sqrt(1.0 + x * x), -math.log(x)) for x in s]
        self._grid.append((1.0, 0.0, math.inf))
        self._history = None

    def set_begin_index(self, begin_index: int) -> None:
        super().set_begin_index(begin_index)
        self._history = None  # the first step from there is first order

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """One solver step x_{t_i} -> x_{t_{i+1}}; model_output = the network's output at (x_{t_i}, t_i),
        sample = x_{t_i}, both (B, C, H, W). Steps must follow `timesteps` in order; `generator` is used by
        the SDE solver only."""
        t = self._check_step(model_output, t, sample)
        i = self._advance(t)
        alpha_s, sigma_s, lambda_s = self._grid[i]
        alpha_t, sigma_t, lambda_t = self._grid[i + 1]
        noise = self._noise(sample, generator)  # None for the ODE

        # 1. Data prediction x0_theta(x_s, s), (B, C, H, W): what DPM-Solver++ integrates.
        x0 = predict_x0(self.prediction, model_output, sample, alpha_s**2)
        history, self._history = self._history, (x0, lambda_s)

        # 2. Final step to sigma = 0: h = inf, e^{-h} = 0, and the update below reduces to x0.
        if sigma_t == 0.0:
            return x0

        # 3. First-order update (Algorithm 2's first step; = DDIM with eta = 0):
        #    x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) D, with D = x0.
        h = lambda_t - lambda_s
        d = x0
        if history is not None:
            # 4. Second order from the previous step's x0 (Algorithm 2, DPM-Solver++(2M)): r = h_{i-1} / h_i,
            #    D = (1 + 1 / (2r)) x0_i - 1 / (2r) x0_{i-1}, i.e. x0_i + (x0_i - x0_{i-1}) / (2r).
            x0_prev, lambda_prev = history
            r = (lambda_s - lambda_prev) / h
            d = x0 + (0.5 / r) * (x0 - x0_prev)
        return self._update(sample, d, alpha_t, sigma_t, sigma_s, h, noise)

    def _noise(self, sample: torch.Tensor, generator: GeneratorArg) -> torch.Tensor | None:
        """The step's noise z (B, C, H, W): none for the ODE."""
        return None

    def _update(self, sample: torch.Tensor, d: torch.Tensor, alpha_t: float, sigma_t: float, sigma_s: float, h: float,
                noise: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """x_t from x_s = ``sample`` (B, C, H, W) and the data term D = ``d`` (B, C, H, W):
        x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) D (Lu et al. 2022, Algorithm 2)."""
        return (sigma_t / sigma_s) * sample - (alpha_t * math.expm1(-h)) * d


class SDEDPMSolverPPSampler(DPMSolverPPSampler):
    """SDE-DPM-Solver++(2M): the same grid, data prediction and second-order D as `DPMSolverPPSampler`,
    with the SDE update; equivalent to diffusers' `DPMSolverMultistepScheduler(algorithm_type=
    "sde-dpmsolver++", solver_order=2, solver_type="midpoint", final_sigmas_type="zero", ...)`, noise
    included: z is drawn at every step (the final one too, where it is multiplied by 0) in float32, row i
    from generators[i], as diffusers draws it."""

    def _noise(self, sample: torch.Tensor, generator: GeneratorArg) -> torch.Tensor:
        return randn_per_sample(sample.shape, generator, dtype=torch.float32, device=sample.device).to(sample.dtype)

    def _update(self, sample: torch.Tensor, d: torch.Tensor, alpha_t: float, sigma_t: float, sigma_s: float, h: float,
                noise: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """x_t = sigma_t / sigma_s e^{-h} x_s + alpha_t (1 - e^{-2h}) D + sigma_t sqrt(1 - e^{-2h}) z: the
        ODE update's mean pulled further toward D, with the variance it leaves made up by fresh noise."""
        return (sigma_t / sigma_s * math.exp(-h)) * sample - (alpha_t * math.expm1(-2.0 * h)) * d \
            + (sigma_t * math.sqrt(-math.expm1(-2.0 * h))) * noise

"""DDPM ancestral sampler (Ho et al. 2020, Algorithm 2), fixed-small variance.

Equivalent to diffusers' `DDPMScheduler(variance_type="fixed_small", clip_sample=False,
prediction_type=prediction, timestep_spacing=spacing)`. With n < T steps it jumps from t to the next
entry of `timesteps`, using alpha-bar at both ends (a DDPM on the sub-sequence of timesteps).
"""

from __future__ import annotations

import math

import torch

from .base import SingleStepSampler
from .noise import GeneratorArg, randn_per_sample
from .parameterization import predict_x0


class DDPMSampler(SingleStepSampler):
    """Stochastic reverse process p_theta(x_{t-1} | x_t) with sigma_t^2 = beta-tilde_t (eq. 7)."""

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{prev_t}. model_output = the network's output at (x_t, t), sample = x_t,
        both (B, C, H, W). `generator`: a generator, a list of B per-sample generators, or None (global RNG).
        """
        t = self._check_step(model_output, t, sample)
        prev_t = self.previous_timestep(t)
        abars = self.schedule.alphas_cumprod  # (T,) float64

        # 1. Scalars (float64): abar_t, abar_prev (1 past the end), and the effective one-jump
        #    alpha_t = abar_t / abar_prev, beta_t = 1 - alpha_t.
        abar_t = float(abars[t])
        abar_prev = float(abars[prev_t]) if prev_t >= 0 else 1.0
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t

        # 2. Predicted x_0, (B, C, H, W); for epsilon prediction this inverts eq. 4 (eq. 15):
        #    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t). No clipping.
        x0_hat = predict_x0(self.prediction, model_output, sample, abar_t)

        # 3. Posterior mean mu-tilde_t(x_t, x0_hat) (eq. 7); together with step 2 this is eq. 11:
        #    mu = sqrt(abar_prev) beta_t / (1 - abar_t) * x0_hat + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) * x_t
        c_x0 = math.sqrt(abar_prev) * beta_t / (1.0 - abar_t)
        c_xt = math.sqrt(alpha_t) * (1.0 - abar_prev) / (1.0 - abar_t)
        mean = c_x0 * x0_hat + c_xt * sample  # (B, C, H, W)

        # 4. Ancestral noise sigma_t z, sigma_t^2 = `variance(t)`; none at the final step (prev_t < 0, where
        #    it is 0; diffusers' rule "t > 0" adds 1e-10 z there with trailing spacing, which ends at t > 0).
        if prev_t >= 0:
            z = randn_per_sample(sample.shape, generator, dtype=sample.dtype, device=sample.device)
            mean = mean + math.sqrt(max(self.variance(t), 1e-20)) * z
        return mean

    def variance(self, t: int) -> float:
        """sigma_t^2 of the step from t: the fixed-small beta-tilde_t = (1 - abar_prev) / (1 - abar_t) beta_t
        (eq. 7, sigma_t^2 in eq. 6 / Algorithm 2), with the one-jump beta_t = 1 - abar_t / abar_prev; 0 at the
        last step. A subclass that scales it scales only the fresh noise (e.g. EDM's S_noise)."""
        prev_t = self.previous_timestep(t)
        if prev_t < 0:
            return 0.0
        abars = self.schedule.alphas_cumprod  # (T,) float64
        abar_t, abar_prev = float(abars[t]), float(abars[prev_t])
        return (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)

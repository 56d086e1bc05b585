"""Noise schedules: betas and everything derived from them (alphas, alpha-bar, SNR, q(x_t | x_0)).

Notation follows Ho et al. 2020 ("DDPM"): beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s,
with 0-based timesteps t in {0, ..., T-1}. All tables are float64; coefficients are cast to the data's
dtype/device only at the point of use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..constants import SCHEDULES  # one list, shared with config validation


def _cosine_betas(timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17 (s = 0.008), identical to diffusers' `betas_for_alpha_bar`."""

    def alpha_bar_fn(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = []
    for i in range(timesteps):
        t1 = i / timesteps
        t2 = (i + 1) / timesteps
        betas.append(min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float64)


def make_betas(kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Return the (T,) float64 beta schedule of the given kind (one of `SCHEDULES`)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
    if kind == "cosine":
        return _cosine_betas(timesteps)
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if kind == "linear":  # Ho et al. 2020, Sec. 4
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    # scaled_linear (Rombach et al. 2022, latent diffusion): linear in sqrt(beta)
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


def check_num_steps(num_inference_steps: int, num_timesteps: int) -> int:
    """Validate a sampler step count 1 <= n <= T (shared by the samplers' `set_timesteps`)."""
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"num_inference_steps must be an int, got {n!r}")
    if not 1 <= n <= num_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {num_timesteps}], got {n}")
    return n


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete forward process; `betas`, `alphas`, `alphas_cumprod` are (T,) float64 CPU tensors."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu").clone()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        alphas = 1.0 - betas
        return cls(betas=betas, alphas=alphas, alphas_cumprod=torch.cumprod(alphas, dim=0))

    @classmethod
    def from_config(
        cls, kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 2e-2
    ) -> NoiseSchedule:
        return cls.from_betas(make_betas(kind, timesteps, beta_start, beta_end))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def _index(self, t: int | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(t).detach().to("cpu", torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps - 1}]")
        return idx

    def snr(self, t: int | torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t), float64, same shape as `t`."""
        abar = self.alphas_cumprod[self._index(t)]
        return abar / (1.0 - abar)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) (Ho et al. eq. 4): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.

        x0, noise: (B, ...); t: int64 (B,) (or a scalar, applied to all samples). Returns x0's dtype/device.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        idx = self._index(t)
        if idx.ndim == 1 and idx.shape[0] != x0.shape[0]:
            raise ValueError(f"t has {idx.shape[0]} entries for a batch of {x0.shape[0]}")
        abar = self.alphas_cumprod[idx]  # (B,) float64
        shape = (-1,) + (1,) * (x0.ndim - 1) if idx.ndim == 1 else ()
        c0 = abar.sqrt().reshape(shape).to(device=x0.device, dtype=x0.dtype)  # (B, 1, 1, 1)
        c1 = (1.0 - abar).sqrt().reshape(shape).to(device=x0.device, dtype=x0.dtype)
        return c0 * x0 + c1 * noise.to(device=x0.device, dtype=x0.dtype)

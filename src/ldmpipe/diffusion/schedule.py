"""Noise schedules: betas and everything derived from them (alphas, alpha-bar, SNR, sigma, q(x_t | x_0)).

Notation follows Ho et al. 2020 ("DDPM"): beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s,
with 0-based timesteps t in {0, ..., T-1}. All tables are float64 and derive from the betas here, in
`NoiseSchedule`; coefficients are cast to the data's dtype/device only at the point of use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..constants import SCHEDULES  # one list, shared with config validation
from ..runtime import to_device

# abar used in place of an exact 0 (zero terminal SNR) wherever sigma = sqrt((1 - abar) / abar) must be
# finite: diffusers' DPMSolverMultistepScheduler sets alphas_cumprod[-1] = 2**-24 in that case.
ZERO_SNR_ABAR = 2.0**-24


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


def rescale_to_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale sqrt(abar) so that abar_{T-1} = 0 (SNR 0, beta_{T-1} = 1)
    while abar_0 is kept. (T,) float64 in and out; needs T >= 2."""
    if betas.shape[0] < 2:
        raise ValueError("rescaling to zero terminal SNR needs at least 2 timesteps")
    # 1. sqrt(abar_t), (T,)
    abar_sqrt = torch.cumprod(1.0 - betas.to(torch.float64), dim=0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    # 2. Shift so the last is 0, scale so the first is unchanged.
    abar_sqrt = (abar_sqrt - last) * (first / (first - last))
    # 3. Back to betas: alpha_t = abar_t / abar_{t-1}, alpha_0 = abar_0.
    abar = abar_sqrt**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def shift_snr(betas: torch.Tensor, factor: float) -> torch.Tensor:
    """Betas whose SNR_t = abar_t / (1 - abar_t) is ``factor`` times that of ``betas`` at every t (T,) float64.

    The resolution shift of "simple diffusion" (Hoogeboom et al. 2023, sec. 3.1; SD3's timestep shift,
    Esser et al. 2024, is the same map): neighbouring values of a larger input are redundant, so the same
    per-value noise erases less of the image at side d than at d_0, and a schedule tuned at side d_0
    should multiply its SNR by (d_0 / d)^2 at side d. ``factor`` < 1 is noisier at every t.
    abar'_t = SNR'_t / (1 + SNR'_t), back to betas by beta_t = 1 - abar'_t / abar'_{t-1}. A factor of
    exactly 1 returns ``betas`` unchanged (the same bytes).
    """
    if not factor > 0:
        raise ValueError(f"the SNR shift factor must be > 0, got {factor!r}")
    if factor == 1.0:
        return betas
    abar = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)  # (T,)
    snr = abar / (1.0 - abar) * factor
    abar = snr / (1.0 + snr)
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


def make_betas(
    kind: str,
    timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 2e-2,
    *,
    rescale_zero_terminal_snr: bool = False,
    snr_shift: float = 1.0,
) -> torch.Tensor:
    """Return the (T,) float64 beta schedule of the given kind (one of `SCHEDULES`).

    linear (Ho et al. 2020), scaled_linear (latent diffusion: linear in sqrt(beta)), cosine (Nichol &
    Dhariwal 2021, ignores beta_start/beta_end), sigmoid (GeoDiff, Xu et al. 2022: diffusers'
    `beta_schedule="sigmoid"`). `snr_shift` multiplies every SNR by that factor (`shift_snr`). Then,
    with `rescale_zero_terminal_snr`, the result is rescaled by Lin et al.'s Algorithm 1, so its last
    beta is exactly 1 (the order in which diffusers applies `trained_betas` and `rescale_betas_zero_snr`).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
    if kind == "cosine":
        betas = _cosine_betas(timesteps)
    elif not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    elif kind == "linear":  # Ho et al. 2020, Sec. 4
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    elif kind == "scaled_linear":  # Rombach et al. 2022 (latent diffusion): linear in sqrt(beta)
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    else:  # sigmoid: beta_start + (beta_end - beta_start) * sigmoid(linspace(-6, 6, T))
        betas = torch.sigmoid(torch.linspace(-6.0, 6.0, timesteps, dtype=torch.float64)) * (beta_end - beta_start)
        betas = betas + beta_start
    betas = shift_snr(betas, snr_shift)
    return rescale_to_zero_terminal_snr(betas) if rescale_zero_terminal_snr else betas


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
        """Betas in (0, 1); the last may be exactly 1 (zero terminal SNR, abar_{T-1} = 0)."""
        betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu").clone()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas[:-1] > 0) & (betas[:-1] < 1)).all()) or not 0 < float(betas[-1]) <= 1:
            raise ValueError("betas must lie in (0, 1) (the last one in (0, 1])")
        alphas = 1.0 - betas
        return cls(betas=betas, alphas=alphas, alphas_cumprod=torch.cumprod(alphas, dim=0))

    @classmethod
    def from_config(
        cls,
        kind: str,
        timesteps: int,
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        *,
        rescale_zero_terminal_snr: bool = False,
        snr_shift: float = 1.0,
    ) -> NoiseSchedule:
        betas = make_betas(kind, timesteps, beta_start, beta_end, rescale_zero_terminal_snr=rescale_zero_terminal_snr,
                           snr_shift=snr_shift)
        return cls.from_betas(betas)

    @classmethod
    def from_params(cls, diffusion: Mapping[str, Any]) -> NoiseSchedule:
        """The schedule of the ``diffusion`` params: a params section as a dict, or a checkpoint's stored copy,
        which may predate ``zero_terminal_snr`` (read as false) and leaves out an ``snr_shift`` of 1."""
        d = diffusion
        return cls.from_config(d["schedule"], d["timesteps"], d["beta_start"], d["beta_end"],
                               rescale_zero_terminal_snr=d.get("zero_terminal_snr", False),
                               snr_shift=d.get("snr_shift", 1.0))  # fmt: skip

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def sigmas(self) -> torch.Tensor:
        """(T,) float64 noise levels of the variance-exploding form x_t / sqrt(abar_t) = x0 + sigma_t eps
        (Karras et al. 2022): sigma_t = sqrt((1 - abar_t) / abar_t) = SNR_t^(-1/2). An abar of exactly 0
        (zero terminal SNR) is read as `ZERO_SNR_ABAR` here, so sigma stays finite (4096)."""
        abar = self.alphas_cumprod
        abar = torch.where(abar == 0, torch.full_like(abar, ZERO_SNR_ABAR), abar)
        return ((1.0 - abar) / abar).sqrt()

    def _index(self, t: int | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(t).detach().to("cpu", torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps - 1}]")
        return idx

    def snr(self, t: int | torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t), float64, same shape as `t` (0 at a zero-SNR end)."""
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
        c0 = to_device(abar.sqrt().reshape(shape), x0.device, x0.dtype)  # (B, 1, 1, 1), cast on the CPU (MPS has no float64)
        c1 = to_device((1.0 - abar).sqrt().reshape(shape), x0.device, x0.dtype)
        return c0 * x0 + c1 * noise.to(device=x0.device, dtype=x0.dtype)

"""Training objective: the simple epsilon-prediction loss of Ho et al. 2020 (eq. 14), optionally
weighted per timestep by Min-SNR-gamma (Hang et al. 2023)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .schedule import NoiseSchedule


def epsilon_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """L_simple = E_{t, x0, eps} || eps - eps_theta(x_t, t) ||^2 (Ho et al. eq. 14), a scalar.

    t ~ U{0..T-1} and eps ~ N(0, I) are drawn (in that order) from `generator` on the CPU, in
    float32, then moved to x0's device/dtype, so the loss is reproducible across devices.
    `model(x_t, t)` is called with x_t (B, C, H, W) and t an int64 (B,) tensor on x0's device.

    With ``min_snr_gamma``, sample i's squared error is weighted by min(SNR(t_i), gamma) / SNR(t_i),
    the Min-SNR-gamma weight for epsilon prediction (Hang et al. 2023, eq. 9 and sec. 3.4): the
    many easy low-noise timesteps stop dominating the gradient, which speeds up convergence.
    """
    if x0.ndim < 2:
        raise ValueError(f"x0 must be batched (B, ...), got shape {tuple(x0.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("epsilon_loss needs a CPU generator")
    B = x0.shape[0]
    # 1. t ~ Uniform({0, ..., T-1}): (B,) int64
    t = torch.randint(0, schedule.num_timesteps, (B,), generator=generator, dtype=torch.long)
    # 2. eps ~ N(0, I): (B, C, H, W)
    eps = torch.randn(tuple(x0.shape), generator=generator, dtype=torch.float32)
    eps = eps.to(device=x0.device, dtype=x0.dtype)
    # 3. x_t ~ q(x_t | x0) (eq. 4): (B, C, H, W)
    x_t = schedule.add_noise(x0, eps, t)
    # 4. MSE against the true noise, reduced in float32 (eq. 14)
    pred = model(x_t, t.to(x0.device))
    if pred.shape != eps.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} != input shape {tuple(eps.shape)}")
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), eps.float())
    # 5. Min-SNR-gamma: per-sample weights (B,), from float64 SNR
    snr = schedule.snr(t)
    weight = (snr.clamp(max=min_snr_gamma) / snr).to(device=x0.device, dtype=torch.float32)
    per_sample = (pred.float() - eps.float()).pow(2).flatten(1).mean(1)  # (B,)
    return (weight * per_sample).mean()

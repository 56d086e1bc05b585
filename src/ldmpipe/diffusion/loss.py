"""Training objective: the simple loss of Ho et al. 2020 (eq. 14) for an epsilon, x0 or v target,
optionally weighted per timestep by Min-SNR-gamma (Hang et al. 2023)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..runtime import WHOLE, Shard, to_device
from .parameterization import check_prediction, training_target
from .schedule import NoiseSchedule


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, sec. 3.4), float64, same shape as `snr`.

    The weight is min(SNR, gamma) on the x0 error; the epsilon and v errors are the x0 error times SNR
    and SNR + 1, so: epsilon: min(SNR, gamma) / SNR; sample: min(SNR, gamma); v: min(SNR, gamma) / (SNR + 1).
    Where SNR = 0 (zero terminal SNR, t = T-1) the weight is set to 1 for every prediction type, the guard
    that diffusers-based training scripts use (`mse_loss_weights[snr == 0] = 1.0`): for epsilon that is
    the limit (the formula gives 0/0); for sample and v the formula would give 0 and leave the terminal
    step untrained, the very step that zero terminal SNR is there to teach (Lin et al. 2024).
    """
    check_prediction(prediction)
    clipped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        weight = clipped / snr
    elif prediction == "sample":
        weight = clipped
    else:
        weight = clipped / (snr + 1.0)
    return torch.where(snr == 0, torch.ones_like(weight), weight)


def diffusion_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    prediction: str = "epsilon",
    min_snr_gamma: float | None = None,
    shard: Shard = WHOLE,
) -> torch.Tensor:
    """E_{t, x0, eps} || target - model(x_t, t) ||^2 (Ho et al. eq. 14), a scalar; target per `prediction`
    (see `parameterization`): eps, x0, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0.

    t ~ U{0..T-1} and eps ~ N(0, I) are drawn (in that order) from `generator` on the CPU, in
    float32, then moved to x0's device/dtype, so the loss is reproducible across devices.
    `model(x_t, t)` is called with x_t (B, C, H, W) and t an int64 (B,) tensor on x0's device.

    With ``min_snr_gamma``, sample i's squared error is weighted by `min_snr_weights` (Hang et al. 2023):
    the many easy low-noise timesteps stop dominating the gradient, which speeds up convergence.

    Data-parallel, x0 is this rank's slice of the global batch (``shard``): t and eps are drawn for
    the whole global batch and sliced, so sample i gets the same t and eps for any number of
    processes, and the loss is the slice's mean (DDP averages the equal slices' gradients).
    """
    check_prediction(prediction)
    if x0.ndim < 2:
        raise ValueError(f"x0 must be batched (B, ...), got shape {tuple(x0.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("the diffusion loss needs a CPU generator")
    B = x0.shape[0]
    # 1. t ~ Uniform({0, ..., T-1}): (B,) int64
    t = shard.randint(schedule.num_timesteps, B, generator)
    # 2. eps ~ N(0, I): (B, C, H, W)
    eps = shard.randn(tuple(x0.shape), generator)
    eps = to_device(eps, x0.device).to(x0.dtype)
    # 3. x_t ~ q(x_t | x0) (eq. 4), and the target: (B, C, H, W)
    x_t = schedule.add_noise(x0, eps, t)
    target = training_target(prediction, x0, eps, schedule.alphas_cumprod[t])
    # 4. MSE against the target, reduced in float32 (eq. 14)
    pred = model(x_t, to_device(t, x0.device))
    if pred.shape != target.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} != input shape {tuple(target.shape)}")
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    # 5. Min-SNR-gamma: per-sample weights (B,), from float64 SNR
    weight = to_device(min_snr_weights(schedule.snr(t), min_snr_gamma, prediction), x0.device).float()
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    return (weight * per_sample).mean()


def epsilon_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """`diffusion_loss` with prediction="epsilon": L_simple = E || eps - eps_theta(x_t, t) ||^2."""
    return diffusion_loss(model, schedule, x0, generator, "epsilon", min_snr_gamma)

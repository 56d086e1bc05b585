"""Training objective: the simple loss of Ho et al. 2020 (eq. 14) for an epsilon, x0 or v target,
optionally weighted per timestep by Min-SNR-gamma (Hang et al. 2023), with t drawn uniformly or, for
the same objective at a lower gradient variance, in proportion to its weight (importance sampling)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..constants import TIMESTEP_SAMPLING  # one list, shared with config validation
from ..runtime import WHOLE, Shard, to_device
from .parameterization import check_prediction, training_target
from .schedule import NoiseSchedule

IMPORTANCE_FLOOR = 0.1  # the uniform share of the importance proposal (a defensive mixture, Hesterberg 1995)


def prediction_weights(x0_weight: torch.Tensor, snr: torch.Tensor, prediction: str = "epsilon") -> torch.Tensor:
    """A loss weight on the x0 error as the weight on the `prediction`'s error, float64, same shape as `snr`.

    The epsilon and v errors are the x0 error times SNR and SNR + 1, so: epsilon: w / SNR; sample: w;
    v: w / (SNR + 1). Where SNR = 0 (zero terminal SNR, t = T-1) the weight is set to 1 for every
    prediction type, the guard that diffusers-based training scripts use (`mse_loss_weights[snr == 0] =
    1.0`): for epsilon that is the limit of min(SNR, gamma) / SNR (the formula gives 0/0); for sample and v
    the formula would give 0 and leave the terminal step untrained, the very step that zero terminal SNR
    is there to teach (Lin et al. 2024).
    """
    check_prediction(prediction)
    if prediction == "epsilon":
        weight = x0_weight / snr
    elif prediction == "sample":
        weight = x0_weight
    else:
        weight = x0_weight / (snr + 1.0)
    return torch.where(snr == 0, torch.ones_like(weight), weight)


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, sec. 3.4), float64, same shape as `snr`: min(SNR, gamma)
    on the x0 error, as the `prediction`'s weight (`prediction_weights`: min(SNR, gamma) / SNR for epsilon,
    min(SNR, gamma) for sample, min(SNR, gamma) / (SNR + 1) for v; 1 where SNR = 0)."""
    return prediction_weights(snr.clamp(max=gamma), snr, prediction)


def timestep_proposal(weights: torch.Tensor, floor: float = IMPORTANCE_FLOOR) -> torch.Tensor:
    """The importance proposal over t for per-timestep loss weights w (T,): float64 (T,),

        p(t) = (1 - floor) w_t / sum_s w_s + floor / T.

    Drawing t ~ p and weighting sample i by w_t / (T p(t)) has the expectation of drawing t uniformly and
    weighting by w_t (the objective is unchanged), with a lower variance where w is uneven: on the default
    shifted cosine schedule Min-SNR-gamma 5 gives the v loss weights below 0.06 at t > 700, so under uniform
    sampling half of each batch carries almost no gradient (effective sample size (E w)^2 / E w^2 = 0.50;
    with this proposal 0.98). The floor keeps every t visited (about 5 % of draws at t > 700), so the
    high-noise end, where the sampler starts, is still trained (Nichol & Dhariwal 2021, sec. 3.3, sample t
    by importance for L_vlb; Kingma & Gao 2023: a loss weighting and a timestep density are interchangeable)."""
    w = weights.double()
    if w.ndim != 1 or not bool((w >= 0).all()) or not float(w.sum()) > 0:
        raise ValueError("timestep weights must be a non-negative (T,) vector with a positive sum")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the proposal's uniform floor must be in (0, 1], got {floor}")
    return (1.0 - floor) * w / w.sum() + floor / len(w)


def diffusion_loss(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    prediction: str = "epsilon",
    min_snr_gamma: float | None = None,
    shard: Shard = WHOLE,
    timestep_sampling: str = "uniform",
) -> torch.Tensor:
    """E_{t, x0, eps} || target - model(x_t, t) ||^2 (Ho et al. eq. 14), a scalar; target per `prediction`
    (see `parameterization`): eps, x0, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0.

    t ~ U{0..T-1} and eps ~ N(0, I) are drawn (in that order) from `generator` on the CPU, in
    float32, then moved to x0's device/dtype, so the loss is reproducible across devices.
    `model(x_t, t)` is called with x_t (B, C, H, W) and t an int64 (B,) tensor on x0's device.

    With ``min_snr_gamma``, sample i's squared error is weighted by `min_snr_weights` (Hang et al. 2023):
    the many easy low-noise timesteps stop dominating the gradient, which speeds up convergence.
    ``timestep_sampling="importance"`` (needs ``min_snr_gamma``) draws t from `timestep_proposal` of those
    weights instead of uniformly, with one multinomial draw from `generator` in place of the uniform one,
    and weights sample i by w_t / (T p(t)): the same expected loss, a less noisy gradient.

    Data-parallel, x0 is this rank's slice of the global batch (``shard``): t and eps are drawn for
    the whole global batch and sliced, so sample i gets the same t and eps for any number of
    processes, and the loss is the slice's mean (DDP averages the equal slices' gradients).
    """
    check_prediction(prediction)
    if x0.ndim < 2:
        raise ValueError(f"x0 must be batched (B, ...), got shape {tuple(x0.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("the diffusion loss needs a CPU generator")
    if timestep_sampling not in TIMESTEP_SAMPLING:
        raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {timestep_sampling!r}")
    if timestep_sampling == "importance" and min_snr_gamma is None:
        raise ValueError("importance sampling of t needs loss weights (min_snr_gamma): without them p(t) is uniform")
    B, T = x0.shape[0], schedule.num_timesteps
    if timestep_sampling == "uniform":
        # 1. t ~ Uniform({0, ..., T-1}): (B,) int64; Min-SNR-gamma weights (B,) float64, from float64 SNR
        t = shard.randint(T, B, generator)
        weight = None if min_snr_gamma is None else min_snr_weights(schedule.snr(t), min_snr_gamma, prediction)
    else:
        # 1. t ~ p(t) of the loss weights, drawn for the global batch and sliced: (B,) int64; weights w_t / (T p(t))
        w_all = min_snr_weights(schedule.snr(torch.arange(T)), min_snr_gamma, prediction)  # (T,) float64
        p = timestep_proposal(w_all)
        t = shard.take(torch.multinomial(p, B * shard.world, replacement=True, generator=generator))
        weight = w_all[t] / (T * p[t])  # (B,) float64
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
    if weight is None:
        return F.mse_loss(pred.float(), target.float())
    # 5. the per-sample weights of step 1
    weight = to_device(weight, x0.device, torch.float32)  # cast on the CPU (MPS has no float64)
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    return (weight * per_sample).mean()


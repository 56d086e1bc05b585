"""Per-timestep denoising error: is the model sound at every noise level?

The training loss averages the error over t ~ U{0..T-1}, so a model can reach a low loss and still
be useless at the few timesteps where a sampler starts.  An eps-prediction model's x0 estimate is
x0_hat = (x_t - s eps_hat) / a (Ho et al. 2020, eq. 15), so its x0 error is its eps error times
(1 - abar_t) / abar_t = 1 / SNR_t: with the cosine schedule (abar_999 = 2.4e-9) an eps-MSE of 0.004
at t = 999 is an x0-MSE of ~1.6e6.  The table here shows that directly: for each probed t, the MSE
of the training target (eps, x0 or v) and of the implied x0 and eps, on held-out latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .parameterization import check_prediction, predict_eps, predict_x0, training_target
from .schedule import ZERO_SNR_ABAR, NoiseSchedule

COLUMNS = ("t", "abar", "snr", "target_mse", "x0_mse", "eps_mse")


def probe_timesteps(num_timesteps: int, count: int = 12) -> list[int]:
    """``count`` evenly spaced timesteps over [0, T-1] plus the high-noise end where samplers start:
    T - T/100 and T - T/20 (t = 990 and 950 for T = 1000) and the first step, sorted, unique."""
    T = num_timesteps
    even = torch.linspace(0, T - 1, count, dtype=torch.float64).round().long().tolist()
    extra = [T - T // 100, T - T // 20, 1]
    return sorted({t for t in even + extra if 0 <= t < T})


@torch.no_grad()
def timestep_errors(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: str,
    timesteps: Sequence[int],
    generator: torch.Generator,
    batch_size: int = 512,
    labels: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """One row per t in ``timesteps`` (see ``COLUMNS``): mean squared errors over x0 (N, C, H, W).

    The same noise eps ~ N(0, I) (N, C, H, W), drawn once from the CPU ``generator``, is used at every t
    (common random numbers), so the rows differ only by the noise level.  x0-MSE and eps-MSE are those
    implied by the model's output through `parameterization.predict_x0` / `predict_eps` (the samplers'
    own conversions); at abar = 0 the eps -> x0 conversion is undefined and uses ``ZERO_SNR_ABAR`` in its
    place (finite, huge: as a sampler would see it).  With ``labels`` (N,), a class model is called as
    ``model(x_t, t, labels)`` with each row's label.
    """
    check_prediction(prediction)
    eps = torch.randn(tuple(x0.shape), generator=generator, dtype=torch.float32).to(x0.device)
    rows = []
    for t in timesteps:
        abar = float(schedule.alphas_cumprod[t])
        a_bar = max(abar, ZERO_SNR_ABAR) if prediction == "epsilon" else abar  # eps -> x0 needs abar > 0
        sums = torch.zeros(3, dtype=torch.float64)
        for i in range(0, len(x0), batch_size):
            # 1. x_t ~ q(x_t | x0) with the shared noise: (B, C, H, W)
            x, e = x0[i : i + batch_size], eps[i : i + batch_size]
            t_batch = torch.full((len(x),), t, dtype=torch.long)
            x_t = schedule.add_noise(x, e, t_batch)
            y = () if labels is None else (labels[i : i + batch_size],)
            out = model(x_t, t_batch.to(x.device), *y).float()
            # 2. the output as target, x0 and eps (Salimans & Ho 2022, appendix D)
            target = training_target(prediction, x, e, schedule.alphas_cumprod[t_batch])
            x0_hat, eps_hat = predict_x0(prediction, out, x_t, a_bar), predict_eps(prediction, out, x_t, a_bar)
            for k, (u, v) in enumerate(((out, target), (x0_hat, x), (eps_hat, e))):
                sums[k] += (u - v).cpu().double().pow(2).sum()  # float64 on the CPU (MPS has none)
        n = x0.numel()
        snr = abar / (1.0 - abar) if abar < 1 else float("inf")
        rows.append(dict(zip(COLUMNS, (int(t), abar, snr, *(float(v) / n for v in sums)))))
    return rows

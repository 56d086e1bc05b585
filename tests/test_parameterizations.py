"""Every parameterisation (ε, x0, v) learns its own target and samples the data it was trained on.

1. Analytic: for Gaussian data x0 ~ N(μ, s0²) the Bayes-optimal predictor of any target c_ε ε + c_x x0
   (ε: (1, 0), x0: (0, 1), v: (a, -s); Ho et al. 2020 eq. 14, Salimans & Ho 2022 sec. 4) is affine in
   x_t = a x0 + s ε, with closed-form coefficients. A per-timestep affine model is fitted exactly to
   `diffusion_loss` (a quadratic in its parameters) and must land on them; sampling the fitted model
   with every sampler must give back N(μ, s0²). A wrong target (say v with its sign flipped, or ε where
   x0 is asked for) moves the minimiser by O(1) and fails both.
2. End to end: every parameterisation, with and without Min-SNR-γ, trains and samples through the DAG.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import copy_run, ran_stages, sh
from ldmpipe.diffusion import SAMPLERS, NoiseSchedule, diffusion_loss, sample_loop

# --- 1. Gaussian data: the optimal predictor of each target in closed form ---------------------------

MU, SD = 1.5, 0.5  # x0 ~ N(MU, SD^2), every element independent
T = 100
SCHEDULES = {  # both end near pure noise, so sampling may start from N(0, I)
    "linear": NoiseSchedule.from_config("linear", T, 1e-3, 0.2),  # abar_{T-1} = 2e-5
    "zero_snr": NoiseSchedule.from_config("scaled_linear", T, 8.5e-3, 0.12, rescale_zero_terminal_snr=True),
}
CASES = [  # (prediction, schedule); epsilon cannot give x0 at zero SNR
    ("epsilon", "linear"), ("sample", "linear"), ("v_prediction", "linear"),
    ("sample", "zero_snr"), ("v_prediction", "zero_snr"),
]  # fmt: skip


def bayes_optimal(prediction: str, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E[target | x_t] = A x_t + B and the Bayes risk Var(target | x_t), each (T,) float64.

    target = c_eps eps + c_x x0 and x_t = a x0 + s eps are jointly Gaussian, so E[target | x_t] =
    E[target] + Cov(target, x_t) / Var(x_t) (x_t - E[x_t]), with Var(x_t) = a^2 SD^2 + s^2,
    Cov(target, x_t) = c_eps s + c_x a SD^2, E[x_t] = a MU, E[target] = c_x MU.
    """
    a, s = abar.sqrt(), (1.0 - abar).sqrt()
    c_eps, c_x = {"epsilon": (1.0, 0.0), "sample": (0.0, 1.0), "v_prediction": (a, -s)}[prediction]
    var_xt = a**2 * SD**2 + s**2
    cov = c_eps * s + c_x * a * SD**2
    A = cov / var_xt
    B = c_x * MU - A * a * MU
    risk = c_eps**2 + c_x**2 * SD**2 - cov**2 / var_xt
    return A, B, risk


def fit_affine(prediction: str, schedule: NoiseSchedule, gamma: float | None, n: int = 32768):
    """The exact minimiser (A, B), each (T,), of `diffusion_loss` over models A[t] x_t + B[t] on n draws of x0.

    The loss (on fixed draws of t and eps: a fresh generator with the same seed at every call) is a
    quadratic in (A, B) that separates over t: grad_t = H_t (A_t, B_t) + b_t with a 2x2 H_t. Three
    gradients give b and the columns of every H_t, and one 2x2 solve per t gives the minimiser.
    """
    x0 = MU + SD * torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def grad(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:  # (T, 2)
        A, B = A.clone().requires_grad_(), B.clone().requires_grad_()
        model = lambda x, t: A[t].reshape(-1, 1, 1, 1) * x + B[t].reshape(-1, 1, 1, 1)  # noqa: E731
        diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(1), prediction, gamma).backward()
        return torch.stack([A.grad, B.grad], dim=-1)

    zero, one = torch.zeros(T, dtype=torch.float64), torch.ones(T, dtype=torch.float64)
    b = grad(zero, zero)
    H = torch.stack([grad(one, zero) - b, grad(zero, one) - b], dim=-1)  # (T, 2, 2)
    theta = torch.linalg.solve(H, -b)  # (T, 2); every t is drawn ~n/T times, so each H_t is invertible
    return theta[:, 0], theta[:, 1]


@pytest.mark.parametrize("gamma", [None, 5.0], ids=["plain", "min_snr"])
@pytest.mark.parametrize("prediction, schedule", CASES)
def test_the_loss_is_minimised_by_the_bayes_optimal_predictor(prediction, schedule, gamma):
    """At every t, the fitted predictor's excess risk over the Bayes risk is sampling noise (~2 / 5000
    draws per t), not the O(1) of a model fitted to another target. Min-SNR-γ weights each t by a
    constant, so it must not move the minimiser."""
    sched = SCHEDULES[schedule]
    A, B = fit_affine(prediction, sched, gamma)
    A_opt, B_opt, risk = bayes_optimal(prediction, sched.alphas_cumprod)
    a, s = sched.alphas_cumprod.sqrt(), (1.0 - sched.alphas_cumprod).sqrt()
    dA, dB = A - A_opt, B - B_opt
    excess = dA**2 * (a**2 * SD**2 + s**2) + (dA * a * MU + dB) ** 2  # E_{x_t}[(dA x_t + dB)^2], (T,)
    assert float((excess / risk).max()) < 0.02, (prediction, schedule, float((excess / risk).max()))


@pytest.mark.parametrize("prediction, schedule", CASES)
def test_sampling_the_fitted_model_gives_back_the_data(prediction, schedule):
    """The fitted model, read back by each sampler through its own parameterisation, maps N(0, I) to
    N(MU, SD^2): mean within 0.03 and std within 10% (DDPM's posterior variance and DDIM's first-order
    steps lose a few percent of the spread at T = 100 steps; a wrong target misses by far more)."""
    sched = SCHEDULES[schedule]
    A, B = (c.float() for c in fit_affine(prediction, sched, None))
    model = lambda x, t: A[t].reshape(-1, 1, 1, 1) * x + B[t].reshape(-1, 1, 1, 1)  # noqa: E731
    for name, cls in SAMPLERS.items():
        sampler = cls(sched, prediction=prediction, spacing="trailing")  # trailing starts at t = T-1
        sampler.set_timesteps(T)
        x = sample_loop(model, sampler, (4000, 1, 2, 2), torch.Generator().manual_seed(3), "cpu", progress=False)
        assert abs(x.mean().item() - MU) < 0.03 and abs(x.std().item() / SD - 1) < 0.1, (name, x.mean(), x.std())


# --- 2. the whole DAG, for every parameterisation -----------------------------------------------------

VARIANTS = [  # (prediction, loss weighting, zero terminal SNR); the tiny config itself is epsilon + min_snr
    ("sample", "min_snr", False),
    ("v_prediction", "min_snr", False),
    ("v_prediction", "none", True),
]


@pytest.fixture(scope="module")
def repo(tiny_run, tmp_path_factory) -> Path:
    repo = copy_run(tiny_run[0], tmp_path_factory.mktemp("parameterizations") / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # keep the reruns short: one sweep stage (DDIM, both step counts) and a 10-step DDPM reference row
    params["sweep"].update(samplers=["ddim"], spacings=["leading"], reference_steps=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", repo)
    return repo


@pytest.mark.e2e
@pytest.mark.parametrize("prediction, weighting, zero_snr", VARIANTS)
def test_parameterization_runs_end_to_end(repo, prediction, weighting, zero_snr):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["diffusion"].update(prediction=prediction, loss_weighting=weighting, zero_terminal_snr=zero_snr,
                               timestep_sampling="importance" if weighting == "min_snr" else "uniform")  # fmt: skip
    params["sample"]["spacing"] = "trailing" if zero_snr else "leading"  # trailing starts at the zero-SNR step
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", repo))
    assert {"train_diffusion", "sample", "evaluate", "report"} <= ran and "train_vae" not in ran
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("fid", "is_mean", "kid_mean", "precision", "recall"))
    summary = json.loads((repo / "reports/train_diffusion/metrics.json").read_text())
    assert math.isfinite(summary["loss"])
    assert f"prediction: {prediction}" in (repo / "reports/report.md").read_text()
    # the stored model learned its own target (a stage that trained another one would pass the above)
    errors, zero = target_errors(repo)
    assert errors[prediction] < 0.9 * zero[prediction], (errors, zero)  # measured ratios 0.05-0.77
    assert all(errors[prediction] < errors[p] for p in errors if p != prediction), errors


def target_errors(repo: Path) -> tuple[dict[str, float], dict[str, float]]:
    """MSE of the stored UNet's output against each prediction type's target on the validation latents,
    and of a zero output (an untrained UNet: its last layer starts at zero), averaged over 10 timesteps."""
    from ldmpipe.diffusion import PREDICTIONS, training_target
    from ldmpipe.generate import schedule_of
    from ldmpipe.io import load_arrays
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    unet, extra = load_model(UNet, repo / "data/diffusion/model.safetensors")
    schedule = schedule_of(extra["diffusion"])
    x0 = torch.from_numpy(load_arrays(repo / "data/latents/val.safetensors")[0]["latents"]).float()
    x0 = x0 * extra["scale_factor"]  # (N, z, h, w)
    T, g = schedule.num_timesteps, torch.Generator().manual_seed(0)
    errors, zero = dict.fromkeys(PREDICTIONS, 0.0), dict.fromkeys(PREDICTIONS, 0.0)
    with torch.no_grad():
        for t in range(0, T, T // 10):
            eps, tt = torch.randn(x0.shape, generator=g), torch.full((len(x0),), t)
            out = unet(schedule.add_noise(x0, eps, tt), tt)
            for p in PREDICTIONS:
                target = training_target(p, x0, eps, schedule.alphas_cumprod[tt])
                errors[p] += (out - target).pow(2).mean().item() / 10
                zero[p] += target.pow(2).mean().item() / 10
    return errors, zero

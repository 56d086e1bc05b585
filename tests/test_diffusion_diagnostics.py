"""Per-timestep error: exact on analytic models whose error is known in closed form."""

from __future__ import annotations

import pytest
import torch

from ldmpipe.diffusion.diagnostics import COLUMNS, probe_timesteps, timestep_errors
from ldmpipe.diffusion.schedule import NoiseSchedule

C = 0.7  # every x0 equals C: the exact eps / x0 / v follow from (x_t, t) alone
DELTA = 0.05  # the analytic model's constant error on its output


def analytic_model(schedule: NoiseSchedule, prediction: str):
    """Outputs the exact target plus DELTA: eps = (x_t - a C) / s, x0 = C, v = a eps - s x0."""

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t.cpu()].float().reshape(-1, 1, 1, 1)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        eps = (x_t - a * C) / s
        exact = {"epsilon": eps, "sample": torch.full_like(x_t, C), "v_prediction": a * eps - s * C}[prediction]
        return exact + DELTA

    return model


def test_probe_timesteps_span_the_range_and_the_high_noise_end():
    ts = probe_timesteps(1000)
    assert len(ts) >= 12 and ts[0] == 0 and ts[-1] == 999 and {950, 990} <= set(ts) and ts == sorted(set(ts))
    assert probe_timesteps(100)[-1] == 99 and len(probe_timesteps(100)) >= 12
    assert probe_timesteps(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_errors_match_closed_form(prediction):
    schedule = NoiseSchedule.from_config("scaled_linear", 1000, 0.00085, 0.012)
    x0 = torch.full((64, 4, 8, 8), C)
    ts = probe_timesteps(1000)
    rows = timestep_errors(analytic_model(schedule, prediction), schedule, x0, prediction, ts,
                           torch.Generator().manual_seed(0), batch_size=24)  # fmt: skip
    assert [r["t"] for r in rows] == ts and all(set(r) == set(COLUMNS) for r in rows)
    for r in rows:
        abar = r["abar"]
        # An output error DELTA is an x0 error of DELTA * (s / a, 1, s) and an eps error of DELTA * (1, a / s, a)
        # for eps / x0 / v (Salimans & Ho 2022, appendix D).
        x0_factor = {"epsilon": (1 - abar) / abar, "sample": 1.0, "v_prediction": 1 - abar}[prediction]
        eps_factor = {"epsilon": 1.0, "sample": abar / (1 - abar), "v_prediction": abar}[prediction]
        assert r["target_mse"] == pytest.approx(DELTA**2, rel=1e-3)
        assert r["x0_mse"] == pytest.approx(DELTA**2 * x0_factor, rel=2e-3, abs=1e-9)
        assert r["eps_mse"] == pytest.approx(DELTA**2 * eps_factor, rel=2e-3, abs=1e-9)
    # eps-prediction amplifies its error by 1/SNR at the high-noise end; v-prediction never above DELTA^2
    if prediction == "epsilon":
        assert rows[-1]["x0_mse"] > 100 * DELTA**2
    if prediction == "v_prediction":
        assert max(r["x0_mse"] for r in rows) <= DELTA**2 * (1 + 1e-3)


def test_same_noise_at_every_timestep_and_batch_size_free():
    schedule = NoiseSchedule.from_config("linear", 100)
    x0 = torch.randn(40, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731 - predicts eps = 0: eps-MSE is the noise's power
    rows_a = timestep_errors(model, schedule, x0, "epsilon", [0, 50, 99], torch.Generator().manual_seed(3), batch_size=7)
    rows_b = timestep_errors(model, schedule, x0, "epsilon", [0, 50, 99], torch.Generator().manual_seed(3), batch_size=40)
    for a, b in zip(rows_a, rows_b):
        assert a["eps_mse"] == pytest.approx(b["eps_mse"], rel=1e-12)
    assert rows_a[0]["eps_mse"] == rows_a[1]["eps_mse"] == rows_a[2]["eps_mse"]  # common random numbers

"""Prediction types (epsilon, sample, v): training targets, conversions to (x0, eps), and their losses."""

import pytest
import torch

from ldmpipe.diffusion import (
    PREDICTIONS,
    NoiseSchedule,
    diffusion_loss,
    min_snr_weights,
    prediction_weights,
    predict_eps,
    predict_x0,
    training_target,
)

ZERO_SNR = NoiseSchedule.from_config("scaled_linear", 100, 8.5e-3, 1.2e-1, rescale_zero_terminal_snr=True)


def _draws(B=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 2, 3, 3, generator=g, dtype=dtype), torch.randn(B, 2, 3, 3, generator=g, dtype=dtype)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("abar", [0.0, 1e-6, 0.3, 0.999])
def test_conversions_invert_the_target(prediction, abar):
    """With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, the exact target converts back to (x0, eps)."""
    x0, eps = _draws()
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
    target = training_target(prediction, x0, eps, torch.full((6,), abar, dtype=torch.float64))
    assert torch.allclose(predict_eps(prediction, target, x_t, abar), eps, rtol=0, atol=1e-9)
    if prediction == "epsilon" and abar == 0.0:
        with pytest.raises(ValueError, match="zero SNR"):  # x_t = eps carries no x0
            predict_x0(prediction, target, x_t, abar)
    else:
        atol = 1e-6 if prediction == "epsilon" else 1e-12  # eps -> x0 divides by sqrt(abar)
        assert torch.allclose(predict_x0(prediction, target, x_t, abar), x0, rtol=0, atol=atol)


def test_v_target_matches_diffusers_get_velocity():
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule.from_config("cosine", 1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    ref.alphas_cumprod = schedule.alphas_cumprod.clone()
    x0, eps = _draws()
    t = torch.tensor([0, 1, 500, 900, 998, 999])
    ours = training_target("v_prediction", x0, eps, schedule.alphas_cumprod[t])
    assert torch.allclose(ours, ref.get_velocity(x0, eps, t), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", [NoiseSchedule.from_config("linear", 100), ZERO_SNR], ids=["linear", "zero_snr"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_oracle_gives_zero_loss(prediction, schedule, gamma):
    """An oracle that knows x0 and inverts the forward process gets loss 0, for every target."""
    x0 = torch.randn(400, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    abar = schedule.alphas_cumprod

    def oracle(x_t, t):
        a = abar[t]
        eps = (x_t - a.sqrt().reshape(-1, 1, 1, 1) * x0) / (1 - a).sqrt().reshape(-1, 1, 1, 1)
        return training_target(prediction, x0, eps, a)

    loss = diffusion_loss(oracle, schedule, x0, torch.Generator().manual_seed(2), prediction, gamma)
    assert loss.item() < 1e-12
    zero = diffusion_loss(lambda x, t: torch.zeros_like(x), schedule, x0, torch.Generator().manual_seed(2),
                          prediction, gamma)  # fmt: skip
    assert torch.isfinite(zero) and zero.item() > 0.1


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_prediction_weights_turn_an_x0_weight_into_the_same_loss(prediction):
    """w_pred(t) ||out - target||^2 = w_x0(t) ||x0_hat - x0||^2 for any output error: the conversion follows
    the parameterisation's own x0 (`predict_x0`); 1 where SNR = 0 (the guard)."""
    schedule = NoiseSchedule.from_config("cosine", 100)
    t = torch.tensor([0, 10, 50, 90, 98])
    abar, snr = schedule.alphas_cumprod[t], schedule.snr(t)
    x0, eps = _draws(5)
    x_t = abar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - abar).sqrt().view(-1, 1, 1, 1) * eps
    target = training_target(prediction, x0, eps, abar)
    out = target + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x0_weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    w = prediction_weights(x0_weight, snr, prediction)
    x0_error = torch.stack([(predict_x0(prediction, out[i : i + 1], x_t[i : i + 1], abar[i].item()) - x0[i : i + 1])
                            .pow(2).mean() for i in range(5)])  # fmt: skip
    torch.testing.assert_close(w * (out - target).pow(2).flatten(1).mean(1), x0_weight * x0_error, rtol=1e-9, atol=0)
    zero = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert prediction_weights(torch.tensor([0.0, 2.0], dtype=torch.float64), zero, prediction)[0] == 1.0


def test_targets_use_the_same_draws():
    """t and eps are drawn as for epsilon: the x0 target is the data, the v target combines the two."""
    x0, _ = _draws(16, torch.float32)
    schedule = NoiseSchedule.from_config("cosine", 100)
    seen = {}

    def model(x_t, t):
        seen.setdefault("x_t", []).append(x_t)
        return torch.zeros_like(x_t)

    losses = {p: diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(4), p) for p in PREDICTIONS}
    assert all(torch.equal(seen["x_t"][0], x) for x in seen["x_t"])
    assert losses["sample"].item() == pytest.approx(x0.pow(2).mean().item(), rel=1e-6)
    g = torch.Generator().manual_seed(4)
    t = torch.randint(0, 100, (16,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    v = training_target("v_prediction", x0, eps, schedule.alphas_cumprod[t])
    assert losses["v_prediction"].item() == pytest.approx(v.pow(2).mean().item(), rel=1e-6)


def test_min_snr_weights_per_prediction():
    """Hang et al. 2023: min(SNR, gamma) on the x0 error, i.e. / SNR for eps and / (SNR + 1) for v."""
    snr = torch.tensor([1e-3, 0.5, 5.0, 20.0, 1e4], dtype=torch.float64)
    g = 5.0
    m = torch.minimum(snr, torch.tensor(g, dtype=torch.float64))
    assert torch.allclose(min_snr_weights(snr, g, "epsilon"), m / snr)
    assert torch.allclose(min_snr_weights(snr, g, "sample"), m)
    assert torch.allclose(min_snr_weights(snr, g, "v_prediction"), m / (snr + 1))
    assert torch.allclose(min_snr_weights(snr, g), m / snr)  # epsilon is the default
    # the same x0-space weighting: ||eps err||^2 = SNR ||x0 err||^2, ||v err||^2 = (SNR + 1) ||x0 err||^2
    assert torch.allclose(min_snr_weights(snr, g, "epsilon") * snr, min_snr_weights(snr, g, "sample"))
    assert torch.allclose(min_snr_weights(snr, g, "v_prediction") * (snr + 1), min_snr_weights(snr, g, "sample"))


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weights_at_zero_snr_are_one(prediction):
    """SNR = 0 (zero terminal SNR): weight 1 (diffusers' training-script guard), finite gradients."""
    snr = ZERO_SNR.snr(torch.arange(100))
    w = min_snr_weights(snr, 5.0, prediction)
    assert snr[-1].item() == 0.0 and w[-1].item() == 1.0 and bool(torch.isfinite(w).all())
    x0 = torch.randn(200, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    net = torch.nn.Conv2d(2, 2, 1)
    loss = diffusion_loss(lambda x, t: net(x), ZERO_SNR, x0, torch.Generator().manual_seed(6), prediction, 5.0)
    loss.backward()
    assert 99 in torch.randint(0, 100, (200,), generator=torch.Generator().manual_seed(6))  # t = T-1 was drawn
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_errors():
    x0, eps = _draws()
    schedule = NoiseSchedule.from_config("linear", 10)
    with pytest.raises(ValueError, match="epsilon, sample, v_prediction"):
        diffusion_loss(lambda x, t: x, schedule, x0, None, "x0")
    for fn in (predict_x0, predict_eps):
        with pytest.raises(ValueError, match="epsilon, sample, v_prediction"):
            fn("velocity", x0, eps, 0.5)
    with pytest.raises(ValueError, match="epsilon, sample, v_prediction"):
        min_snr_weights(torch.ones(3), 5.0, "noise")

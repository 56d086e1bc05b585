"""The simple epsilon-prediction loss (Ho et al. 2020 eq. 14)."""

import pytest
import torch

from ldmpipe.diffusion import NoiseSchedule, epsilon_loss

SCHEDULE = NoiseSchedule.from_config("linear", 100)


class Recorder:
    """A model that records its inputs and returns a fixed function of them."""

    def __init__(self, fn=lambda x, t: torch.zeros_like(x)):
        self.fn, self.calls = fn, []

    def __call__(self, x_t, t):
        self.calls.append((x_t.clone(), t.clone()))
        return self.fn(x_t, t)


def _x0(dtype=torch.float32):
    return torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(99), dtype=dtype)


def test_deterministic_given_generator():
    x0 = _x0()
    m1, m2, m3 = Recorder(), Recorder(), Recorder()
    l1 = epsilon_loss(m1, SCHEDULE, x0, torch.Generator().manual_seed(0))
    l2 = epsilon_loss(m2, SCHEDULE, x0, torch.Generator().manual_seed(0))
    l3 = epsilon_loss(m3, SCHEDULE, x0, torch.Generator().manual_seed(1))
    assert l1.ndim == 0 and torch.equal(l1, l2)
    (x1, t1), (x2, t2), (x3, t3) = m1.calls[0], m2.calls[0], m3.calls[0]
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert not torch.equal(x1, x3) and not torch.equal(t1, t3)
    assert t1.dtype == torch.int64 and t1.shape == (16,) and x1.shape == x0.shape and x1.dtype == x0.dtype


def test_timesteps_cover_range():
    m = Recorder()
    schedule = NoiseSchedule.from_config("cosine", 10)
    epsilon_loss(m, schedule, torch.zeros(2000, 1, 1, 1), torch.Generator().manual_seed(0))
    t = m.calls[0][1]
    assert int(t.min()) == 0 and int(t.max()) == 9 and len(t.unique()) == 10


def test_true_noise_gives_zero_loss():
    """Replay the documented draws (t, then float32 eps, from the generator): returning eps gives exactly 0,
    and x_t is schedule.add_noise(x0, eps, t)."""
    x0 = _x0()
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (16,), generator=g)
    eps = torch.randn(16, 3, 8, 8, generator=g)
    m = Recorder(lambda x, tt: eps)
    assert epsilon_loss(m, SCHEDULE, x0, torch.Generator().manual_seed(3)).item() == 0.0
    x_t, t_seen = m.calls[0]
    assert torch.equal(t_seen, t) and torch.equal(x_t, SCHEDULE.add_noise(x0, eps, t))


def test_oracle_inverting_the_forward_process_gives_zero_loss():
    """Without relying on the draw order: an oracle that knows x0 recovers eps from x_t (eq. 4)."""
    x0 = _x0(torch.float64)
    abar = SCHEDULE.alphas_cumprod

    def oracle(x_t, t):
        a = abar[t].reshape(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    assert epsilon_loss(oracle, SCHEDULE, x0, torch.Generator().manual_seed(5)).item() < 1e-12
    zero = epsilon_loss(lambda x, t: torch.zeros_like(x), SCHEDULE, x0, torch.Generator().manual_seed(5))
    assert zero.item() == pytest.approx(1.0, abs=0.1)  # E[eps^2] = 1


def test_errors():
    with pytest.raises(ValueError):
        epsilon_loss(lambda x, t: x[:1], SCHEDULE, _x0(), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        epsilon_loss(lambda x, t: x, SCHEDULE, torch.zeros(5), torch.Generator().manual_seed(0))


def test_min_snr_weights_match_hang_et_al():
    """Min-SNR-gamma for epsilon prediction: w_t = min(SNR_t, gamma) / SNR_t per sample."""
    import torch

    from ldmpipe.diffusion import NoiseSchedule, epsilon_loss

    schedule = NoiseSchedule.from_config("linear", 100)
    x0 = torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    errors = {}

    def model(x_t, t):
        errors["t"] = t
        return torch.zeros_like(x_t)  # squared error = eps^2

    plain = epsilon_loss(model, schedule, x0, torch.Generator().manual_seed(1))
    weighted = epsilon_loss(model, schedule, x0, torch.Generator().manual_seed(1), min_snr_gamma=5.0)
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 100, (16,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    snr = schedule.snr(t)
    w = (torch.minimum(snr, torch.tensor(5.0, dtype=snr.dtype)) / snr).float()
    assert torch.allclose(plain, eps.pow(2).mean())
    assert torch.allclose(weighted, (w * eps.pow(2).flatten(1).mean(1)).mean())
    assert weighted < plain  # weights are <= 1

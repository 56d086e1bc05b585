"""The simple loss (Ho et al. 2020 eq. 14), its Min-SNR weights and the importance sampling of t."""

import pytest
import torch

from ldmpipe.diffusion import NoiseSchedule, diffusion_loss, min_snr_weights, timestep_proposal
from ldmpipe.distributed import Shard

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
    l1 = diffusion_loss(m1, SCHEDULE, x0, torch.Generator().manual_seed(0), "epsilon")
    l2 = diffusion_loss(m2, SCHEDULE, x0, torch.Generator().manual_seed(0), "epsilon")
    l3 = diffusion_loss(m3, SCHEDULE, x0, torch.Generator().manual_seed(1), "epsilon")
    assert l1.ndim == 0 and torch.equal(l1, l2) and not torch.equal(l1, l3)
    (x1, t1), (x2, t2), (x3, t3) = m1.calls[0], m2.calls[0], m3.calls[0]
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    assert not torch.equal(x1, x3) and not torch.equal(t1, t3)
    assert t1.dtype == torch.int64 and t1.shape == (16,) and x1.shape == x0.shape and x1.dtype == x0.dtype


def test_timesteps_cover_range():
    m = Recorder()
    schedule = NoiseSchedule.from_config("cosine", 10)
    diffusion_loss(m, schedule, torch.zeros(2000, 1, 1, 1), torch.Generator().manual_seed(0), "epsilon")
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
    assert diffusion_loss(m, SCHEDULE, x0, torch.Generator().manual_seed(3), "epsilon").item() == 0.0
    x_t, t_seen = m.calls[0]
    assert torch.equal(t_seen, t) and torch.equal(x_t, SCHEDULE.add_noise(x0, eps, t))


def test_oracle_inverting_the_forward_process_gives_zero_loss():
    """Without relying on the draw order: an oracle that knows x0 recovers eps from x_t (eq. 4)."""
    x0 = _x0(torch.float64)
    abar = SCHEDULE.alphas_cumprod

    def oracle(x_t, t):
        a = abar[t].reshape(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    assert diffusion_loss(oracle, SCHEDULE, x0, torch.Generator().manual_seed(5), "epsilon").item() < 1e-12
    zero = diffusion_loss(lambda x, t: torch.zeros_like(x), SCHEDULE, x0, torch.Generator().manual_seed(5), "epsilon")
    assert zero.item() == pytest.approx(1.0, abs=0.1)  # E[eps^2] = 1


def test_errors():
    with pytest.raises(ValueError):
        diffusion_loss(lambda x, t: x[:1], SCHEDULE, _x0(), torch.Generator().manual_seed(0), "epsilon")
    with pytest.raises(ValueError):
        diffusion_loss(lambda x, t: x, SCHEDULE, torch.zeros(5), torch.Generator().manual_seed(0), "epsilon")


def test_min_snr_weights_match_hang_et_al():
    """Min-SNR-gamma for epsilon prediction: w_t = min(SNR_t, gamma) / SNR_t per sample."""
    schedule = NoiseSchedule.from_config("linear", 100)
    x0 = torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    errors = {}

    def model(x_t, t):
        errors["t"] = t
        return torch.zeros_like(x_t)  # squared error = eps^2

    plain = diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(1), "epsilon")
    weighted = diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(1), "epsilon", min_snr_gamma=5.0)
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 100, (16,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    snr = schedule.snr(t)
    w = (torch.minimum(snr, torch.tensor(5.0, dtype=snr.dtype)) / snr).float()
    assert torch.allclose(plain, eps.pow(2).mean())
    assert torch.allclose(weighted, (w * eps.pow(2).flatten(1).mean(1)).mean())
    assert weighted < plain  # weights are <= 1


# --- importance sampling of t (diffusion.timestep_sampling: importance) ---------------------------

COSINE = NoiseSchedule.from_config("cosine", 20)


def _weights(schedule=COSINE, prediction="v_prediction"):
    return min_snr_weights(schedule.snr(torch.arange(schedule.num_timesteps)), 5.0, prediction)


def test_proposal_is_a_floored_density_that_leaves_the_objective_unchanged():
    """p sums to 1, never falls below floor / T, and E_p[w_t / (T p(t)) L_t] = mean_t w_t L_t for any L."""
    w = _weights()
    p = timestep_proposal(w)
    T = len(w)
    assert p.dtype == torch.float64 and torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert bool((p >= 0.1 / T - 1e-15).all()) and int(p.argmax()) == int(w.argmax())
    per_t_loss = torch.rand(T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    importance = (p * (w / (T * p)) * per_t_loss).sum()
    assert torch.isclose(importance, (w * per_t_loss).mean(), rtol=1e-12)
    assert torch.allclose(timestep_proposal(torch.ones(T)), torch.full((T,), 1 / T, dtype=torch.float64))
    with pytest.raises(ValueError):
        timestep_proposal(torch.zeros(T))
    with pytest.raises(ValueError):
        timestep_proposal(w, floor=0.0)


def test_importance_draws_replay_and_follow_the_proposal():
    """One multinomial draw of t from p (in place of the uniform one), then eps; sample i weighted by
    w_t / (T p(t)); over many draws each t appears at its rate p(t)."""
    B = 20000
    x0 = torch.randn(B, 1, 2, 2, generator=torch.Generator().manual_seed(7))
    m = Recorder()
    loss = diffusion_loss(m, COSINE, x0, torch.Generator().manual_seed(4), "epsilon", 5.0,
                          timestep_sampling="importance")  # fmt: skip
    w = _weights(prediction="epsilon")
    p = timestep_proposal(w)
    g = torch.Generator().manual_seed(4)
    t = torch.multinomial(p, B, replacement=True, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(m.calls[0][1], t)
    expected = ((w[t] / (COSINE.num_timesteps * p[t])).float() * eps.pow(2).flatten(1).mean(1)).mean()
    assert torch.allclose(loss, expected)
    freq = torch.bincount(t, minlength=COSINE.num_timesteps).double() / B
    assert torch.allclose(freq, p, atol=4 * (p * (1 - p) / B).sqrt().max().item())


def test_importance_sampling_keeps_the_mean_loss_and_lowers_its_variance():
    """Over 400 seeds the two estimators of the Min-SNR v loss of a fixed model agree in mean (within their
    standard errors) and the importance one varies less: the point of drawing t by its weight."""
    x0 = torch.randn(32, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    model = lambda x, t: 0.5 * x  # noqa: E731  a crude denoiser whose error depends on t
    runs = {s: torch.stack([diffusion_loss(model, COSINE, x0, torch.Generator().manual_seed(i), "v_prediction", 5.0,
                                           timestep_sampling=s) for i in range(400)]).double()
            for s in ("uniform", "importance")}  # fmt: skip
    u, i = runs["uniform"], runs["importance"]
    stderr = ((u.var() + i.var()) / 400).sqrt()
    assert abs(u.mean() - i.mean()) < 4 * stderr
    assert i.std() < 0.8 * u.std()


def test_importance_draws_do_not_depend_on_the_number_of_processes():
    x0 = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    whole = Recorder()
    diffusion_loss(whole, COSINE, x0, torch.Generator().manual_seed(3), "v_prediction", 5.0, timestep_sampling="importance")
    ts = []
    for rank in range(2):
        part = Recorder()
        diffusion_loss(part, COSINE, Shard(rank, 2).take(x0), torch.Generator().manual_seed(3), "v_prediction", 5.0,
                       shard=Shard(rank, 2), timestep_sampling="importance")  # fmt: skip
        ts.append(part.calls[0][1])
    assert torch.equal(torch.cat(ts), whole.calls[0][1])


def test_importance_sampling_errors():
    with pytest.raises(ValueError, match="needs loss weights"):
        diffusion_loss(Recorder(), COSINE, _x0(), torch.Generator().manual_seed(0), timestep_sampling="importance")
    with pytest.raises(ValueError, match="timestep_sampling must be one of"):
        diffusion_loss(Recorder(), COSINE, _x0(), torch.Generator().manual_seed(0), timestep_sampling="lognormal")

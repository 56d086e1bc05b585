"""Samplers: exact agreement with diffusers (if installed), analytic Gaussian check, per-sample seeds, errors.

Reference comparison (diffusers): diffusers casts `trained_betas` to float32, so after constructing
its schedulers we overwrite `betas`/`alphas`/`alphas_cumprod` with our float64 tables; both sides then
run in float64. Variance noise: diffusers draws it with `randn_tensor(shape, generator=list, dtype=
model_output.dtype)`, i.e. row i from torch.randn((1, ...), generator=gens[i]) on CPU in the sample's
dtype - the same scheme as our `randn_per_sample`. We hand each side its own list of CPU generators
with identical seeds, so identical noise is consumed without patching anything.
"""

import pytest
import torch

from ldmpipe.diffusion import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    NoiseSchedule,
    randn_per_sample,
    sample_generators,
    sample_loop,
)

T = 1000
SHAPE = (3, 2, 4, 4)


def fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for eps_theta(x_t, t)."""
    return 0.3 * torch.tanh(x) + 1e-3 * t


def _diffusers_scheduler(cls, schedule: NoiseSchedule, **kw):
    sched = cls(
        num_train_timesteps=schedule.num_timesteps,
        trained_betas=schedule.betas.numpy(),
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=0,
        **kw,
    )
    sched.betas = schedule.betas.clone()
    sched.alphas = schedule.alphas.clone()
    sched.alphas_cumprod = schedule.alphas_cumprod.clone()
    return sched


def _compare_with_reference(ours, ref, n: int, ref_step_kwargs: dict) -> None:
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert ours.timesteps.dtype == torch.int64
    assert torch.equal(ours.timesteps, ref.timesteps.to(torch.int64))
    seeds = [11, 12, 13]
    gens_ours, gens_ref = sample_generators(seeds), sample_generators(seeds)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x.clone()
    for t in ours.timesteps.tolist():
        x = ours.step(fake_eps(x, t), t, x, generator=gens_ours)
        y = ref.step(fake_eps(y, t), t, y, generator=gens_ref, return_dict=False, **ref_step_kwargs)[0]
        assert x.dtype == torch.float64
        rel = ((x - y).abs().max() / y.abs().max()).item()
        assert rel <= 1e-6, f"t={t}: max relative difference {rel:.3g}"
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("n", [10, 50, T])
def test_ddpm_matches_diffusers(kind, n):
    diffusers = pytest.importorskip("diffusers")
    beta_range = (8.5e-4, 1.2e-2) if kind == "scaled_linear" else (1e-4, 2e-2)  # the LDM range for scaled_linear
    schedule = NoiseSchedule.from_config(kind, T, *beta_range)
    ref = _diffusers_scheduler(
        diffusers.DDPMScheduler, schedule, variance_type="fixed_small", timestep_spacing="leading"
    )
    _compare_with_reference(DDPMSampler(schedule), ref, n, {})


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("n", [10, 50, T])
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers(kind, n, eta, spacing):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule.from_config(kind, T)
    ref = _diffusers_scheduler(diffusers.DDIMScheduler, schedule, set_alpha_to_one=True, timestep_spacing=spacing)
    _compare_with_reference(DDIMSampler(schedule, eta=eta, spacing=spacing), ref, n, {"eta": eta})


def test_reference_comparison_is_sensitive():
    """Guard against a vacuous reference test: a different eta / seed must be detected."""
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule.from_config("linear", T)
    ref = _diffusers_scheduler(diffusers.DDIMScheduler, schedule, set_alpha_to_one=True)
    with pytest.raises(AssertionError):
        _compare_with_reference(DDIMSampler(schedule, eta=0.5), ref, 10, {"eta": 0.4})


# --- analytic check: Gaussian data, where the optimal eps-predictor is known in closed form ---------
# For x0 ~ N(0, s^2 I), x_t ~ N(0, v_t I) with v_t = abar_t s^2 + 1 - abar_t and E[eps | x_t] is linear
# in x_t. Every sampler step is then x_prev = k x_t + sigma z, so the output std follows a scalar
# recursion; with few steps DDIM loses some variance (discretisation error, e.g. ~5.5% for 50 linear
# steps at s = 0.5), which is why the 5% check below uses the cosine schedule for 50-step DDIM.

GAUSS_SHAPE = (4096, 1, 2, 2)


def gaussian_eps_model(schedule: NoiseSchedule, s: float):
    """E[eps | x_t] for x0 ~ N(0, s^2 I): sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t)."""
    abar = schedule.alphas_cumprod

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t.cpu()].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * x / (a * s**2 + 1 - a)

    return model


def predicted_gain_and_std(sampler, s: float) -> tuple[float, float]:
    """Scalar recursion (DDIM eq. 12/16 written for a linear predictor): gain K and std of the output
    for x_T ~ N(0, 1). DDPM is DDIM with eta = 1 (Song et al. Sec. 4.1)."""
    abar = sampler.schedule.alphas_cumprod.tolist()
    eta = getattr(sampler, "eta", 1.0)
    gain, var = 1.0, 1.0
    for t in sampler.timesteps.tolist():
        p = sampler.previous_timestep(t)
        a, ap = abar[t], (abar[p] if p >= 0 else 1.0)
        g = (1 - a) ** 0.5 / (a * s**2 + 1 - a)  # eps_hat = g x_t
        sig2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        k = (ap / a) ** 0.5 * (1 - (1 - a) ** 0.5 * g) + max(1 - ap - sig2, 0.0) ** 0.5 * g
        gain, var = gain * k, k * k * var + sig2
    return gain, var**0.5


def _scaled(kind: str, T_: int) -> NoiseSchedule:
    """The default beta range rescaled to T_ steps, so that abar_T ~ 0 also for short schedules."""
    return NoiseSchedule.from_config(kind, T_, 1e-4 * 1000 / T_, 2e-2 * 1000 / T_)


@pytest.mark.parametrize(
    "sampler_name, kind, T_, n, opts",
    [
        ("ddim", "cosine", 1000, 50, {"eta": 0.0}),
        ("ddim", "cosine", 1000, 50, {"eta": 0.0, "spacing": "trailing"}),
        ("ddim", "linear", 1000, 1000, {"eta": 1.0}),
        ("ddpm", "linear", 200, 200, {}),
        ("ddpm", "cosine", 200, 200, {}),
    ],
)
def test_gaussian_data_recovers_std(sampler_name, kind, T_, n, opts):
    s = 0.5
    sampler = SAMPLERS[sampler_name](_scaled(kind, T_), **opts)
    sampler.set_timesteps(n)
    gen = torch.Generator().manual_seed(1234)
    x = sample_loop(gaussian_eps_model(sampler.schedule, s), sampler, GAUSS_SHAPE, gen, "cpu", progress=False)
    assert x.dtype == torch.float32 and x.shape == GAUSS_SHAPE
    assert abs(x.std().item() - s) / s < 0.05, x.std().item()
    assert abs(x.mean().item()) < 0.02


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_eta0_is_the_predicted_linear_map(kind, spacing):
    s = 0.5
    sampler = DDIMSampler(_scaled(kind, 1000), eta=0.0, spacing=spacing)
    sampler.set_timesteps(50)
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, model = x_T, gaussian_eps_model(sampler.schedule, s)
    for t in sampler.timesteps.tolist():
        x = sampler.step(model(x, torch.full((64,), t)), t, x)
    gain, _ = predicted_gain_and_std(sampler, s)
    assert 0.9 * s < gain < s
    assert torch.allclose(x, gain * x_T, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    "sampler_name, kind, n, opts",
    [("ddpm", "linear", 50, {}), ("ddpm", "cosine", 1000, {}), ("ddim", "linear", 100, {"eta": 0.5})],
)
def test_stochastic_std_matches_variance_recursion(sampler_name, kind, n, opts):
    s = 0.5
    sampler = SAMPLERS[sampler_name](_scaled(kind, 1000), **opts)
    sampler.set_timesteps(n)
    gen = torch.Generator().manual_seed(7)
    x = sample_loop(gaussian_eps_model(sampler.schedule, s), sampler, GAUSS_SHAPE, gen, "cpu", progress=False)
    _, std = predicted_gain_and_std(sampler, s)
    assert abs(x.std().item() - std) / std < 0.02, (x.std().item(), std)


def test_gaussian_check_detects_a_broken_sampler(monkeypatch):
    """The analytic check is not vacuous: DDPM with its noise term removed, or a wrong predictor, fails it."""
    import ldmpipe.diffusion.ddpm as ddpm_module

    s = 0.5
    schedule = NoiseSchedule.from_config("linear", 200, 5e-4, 0.1)
    sampler = DDPMSampler(schedule)
    sampler.set_timesteps(200)
    shape = (4096, 1, 2, 2)
    wrong = sample_loop(gaussian_eps_model(schedule, 2 * s), sampler, shape, None, "cpu", progress=False)
    assert abs(wrong.std().item() - s) / s > 0.05
    no_noise = lambda shape, g, dtype, device: torch.zeros(shape, dtype=dtype)  # noqa: E731
    monkeypatch.setattr(ddpm_module, "randn_per_sample", no_noise)
    broken = sample_loop(gaussian_eps_model(schedule, s), sampler, shape, None, "cpu", progress=False)
    assert abs(broken.std().item() - s) / s > 0.05


# --- per-sample seeds ----------------------------------------------------------------------------


def test_randn_per_sample_rows_follow_their_seed():
    x = randn_per_sample((3, 2, 4, 4), sample_generators([5, 6, 7]))
    assert x.dtype == torch.float32 and x.shape == (3, 2, 4, 4)
    for i, seed in enumerate([5, 6, 7]):
        assert torch.equal(x[i], torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(seed)))
    single = randn_per_sample((3, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(single, torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert randn_per_sample((3, 2), None).shape == (3, 2)
    with pytest.raises(ValueError):
        randn_per_sample((4, 2), sample_generators([0, 1, 2]))


@pytest.mark.parametrize("sampler_name, opts", [("ddpm", {}), ("ddim", {"eta": 0.5})])
def test_sample_loop_is_batch_size_invariant(sampler_name, opts):
    schedule = _scaled("linear", 50)
    sampler = SAMPLERS[sampler_name](schedule, **opts)
    sampler.set_timesteps(50)
    model = gaussian_eps_model(schedule, 0.5)
    shape = (2, 4, 4)

    def run(seeds):
        return sample_loop(model, sampler, (len(seeds), *shape), sample_generators(seeds), "cpu", progress=False)

    full = run(list(range(8)))
    assert full.dtype == torch.float32 and full.shape == (8, *shape)
    assert torch.equal(full, torch.cat([run([0, 1, 2, 3]), run([4, 5, 6, 7])]))
    assert torch.equal(full[5:6], run([5]))
    assert not torch.equal(full[0], full[1])


def test_sample_loop_progress_goes_to_stderr(capsys):
    sampler = DDIMSampler(_scaled("linear", 50))
    sampler.set_timesteps(5)
    sample_loop(gaussian_eps_model(sampler.schedule, 0.5), sampler, (2, 1, 2, 2), sample_generators([0, 1]), "cpu")
    out, err = capsys.readouterr()
    assert out == "" and "sampling" in err


# --- timesteps and errors ----------------------------------------------------------------------------


def test_timesteps():
    schedule = NoiseSchedule.from_config("linear", 1000)
    ddpm = DDPMSampler(schedule)
    ddpm.set_timesteps(10)
    assert ddpm.timesteps.tolist() == list(range(900, -1, -100))
    ddpm.set_timesteps(1000)
    assert ddpm.timesteps.tolist() == list(range(999, -1, -1))
    ddim = DDIMSampler(schedule, spacing="trailing")
    ddim.set_timesteps(10)
    assert ddim.timesteps.tolist() == list(range(999, 0, -100))
    for n in (1, 3, 7, 29, 999):  # always exactly n distinct, descending, in range
        ddim.set_timesteps(n)
        ts = ddim.timesteps
        assert ts.dtype == torch.int64 and ts.shape == (n,)
        assert bool((ts.diff() < 0).all()) and 0 <= int(ts.min()) and int(ts.max()) == 999


def test_errors():
    schedule = NoiseSchedule.from_config("linear", 100)
    for sampler in (DDPMSampler(schedule), DDIMSampler(schedule)):
        x = torch.zeros(1, 1, 2, 2)
        with pytest.raises(ValueError, match="set_timesteps"):
            sampler.step(x, 99, x)
        with pytest.raises(ValueError):
            sampler.set_timesteps(0)
        with pytest.raises(ValueError):
            sampler.set_timesteps(101)
        with pytest.raises(ValueError):
            sampler.set_timesteps(2.5)
        sampler.set_timesteps(100)
        with pytest.raises(ValueError):
            sampler.step(x, 100, x)
        with pytest.raises(ValueError):
            sampler.step(torch.zeros(2, 1, 2, 2), 99, x)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=1.5)
    with pytest.raises(ValueError, match="leading, trailing"):
        DDIMSampler(schedule, spacing="linspace")
    with pytest.raises(ValueError):
        DDPMSampler("linear")
    with pytest.raises(ValueError, match="set_timesteps"):
        sample_loop(lambda x, t: x, DDIMSampler(schedule), (1, 1, 2, 2), None, "cpu")
    assert set(SAMPLERS) == {"ddpm", "ddim"}

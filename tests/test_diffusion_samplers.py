"""Samplers: analytic Gaussian checks, the sampling loop (NFE, per-sample seeds), timesteps, errors.

The step-by-step comparison with diffusers is in test_diffusion_reference.py.
"""

import pytest
import torch

from ldmpipe.diffusion import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    SDEDPMSolverPPSampler,
    HeunSampler,
    NoiseSchedule,
    randn_per_sample,
    sample_generators,
    sample_loop,
)

# --- analytic check: Gaussian data, where the optimal predictor is known in closed form --------------
# For x0 ~ N(0, s^2 I), x_t ~ N(0, v_t I) with v_t = abar_t s^2 + 1 - abar_t, and E[eps | x_t], E[x0 | x_t]
# (hence E[v | x_t]) are linear in x_t. Every DDPM/DDIM step is then x_prev = k x_t + sigma z, so the
# output std follows a scalar recursion; with few steps DDIM loses some variance (discretisation error,
# e.g. ~5.5% for 50 linear steps at s = 0.5), which is why the 5% checks below pick their step counts.
# The ODE samplers map x_T linearly too, and the exact map is known: x0 = x_T(VE) s / sqrt(s^2 + sigma^2).

GAUSS_SHAPE = (4096, 1, 2, 2)
PREDICTIONS = ["epsilon", "sample", "v_prediction"]


def gaussian_model(schedule: NoiseSchedule, s: float, prediction: str = "epsilon"):
    """The optimal network for x0 ~ N(0, s^2 I), with c = abar s^2 + 1 - abar: E[eps | x_t] =
    sqrt(1 - abar) x_t / c, E[x0 | x_t] = sqrt(abar) s^2 x_t / c, and v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    abar = schedule.alphas_cumprod

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t.cpu()].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        eps = (1 - a).sqrt() * x / (a * s**2 + 1 - a)
        x0 = a.sqrt() * s**2 * x / (a * s**2 + 1 - a)
        return {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

    return model


def gaussian_eps_model(schedule: NoiseSchedule, s: float):
    return gaussian_model(schedule, s, "epsilon")


def predicted_gain_and_std(sampler, s: float) -> tuple[float, float]:
    """Scalar recursion (DDIM eq. 12/16 written for a linear predictor): gain K and std of the output
    for x_T ~ N(0, 1). DDPM is DDIM with eta = 1 (Song et al. Sec. 4.1). Valid at abar = 0 too."""
    abar = sampler.schedule.alphas_cumprod.tolist()
    eta = getattr(sampler, "eta", 1.0)
    gain, var = 1.0, 1.0
    for t in sampler.timesteps.tolist():
        p = sampler.previous_timestep(t)
        a, ap = abar[t], (abar[p] if p >= 0 else 1.0)
        g = (1 - a) ** 0.5 / (a * s**2 + 1 - a)  # eps_hat = g x_t
        c = a**0.5 * s**2 / (a * s**2 + 1 - a)  # x0_hat = c x_t
        sig2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        k = ap**0.5 * c + max(1 - ap - sig2, 0.0) ** 0.5 * g
        gain, var = gain * k, k * k * var + sig2
    return gain, var**0.5


def _scaled(kind: str, T_: int, zero_snr: bool = False) -> NoiseSchedule:
    """The default beta range rescaled to T_ steps, so that abar_T ~ 0 also for short schedules."""
    return NoiseSchedule.from_config(kind, T_, 1e-4 * 1000 / T_, 2e-2 * 1000 / T_, rescale_zero_terminal_snr=zero_snr)


GAUSS_CASES = [  # (sampler_name, kind, T_, n, opts)
    ("ddim", "cosine", 1000, 50, {"eta": 0.0}),
    ("ddim", "cosine", 1000, 50, {"eta": 0.0, "spacing": "trailing"}),
    ("ddim", "linear", 1000, 1000, {"eta": 1.0}),
    ("ddpm", "linear", 200, 200, {}),
    ("ddpm", "cosine", 200, 200, {"spacing": "linspace"}),
    ("dpm_solver_pp", "cosine", 1000, 20, {}),
    ("dpm_solver_pp", "linear", 1000, 25, {"spacing": "leading"}),
    ("dpm_solver_pp_sde", "cosine", 1000, 20, {}),
    ("dpm_solver_pp_sde", "linear", 1000, 25, {"spacing": "leading"}),
    ("heun", "linear", 1000, 20, {}),
    ("heun", "linear", 1000, 20, {"spacing": "leading"}),
]


@pytest.mark.parametrize(
    "sampler_name, kind, T_, n, opts, prediction",
    [(*case, p) for case in GAUSS_CASES for p in PREDICTIONS if case[3] < 1000 or p == "epsilon"],
)
def test_gaussian_data_recovers_std(sampler_name, kind, T_, n, opts, prediction):
    s = 0.5
    sampler = SAMPLERS[sampler_name](_scaled(kind, T_), prediction=prediction, **opts)
    sampler.set_timesteps(n)
    gen = torch.Generator().manual_seed(1234)
    model = gaussian_model(sampler.schedule, s, prediction)
    x = sample_loop(model, sampler, GAUSS_SHAPE, gen, "cpu", progress=False)
    assert x.dtype == torch.float32 and x.shape == GAUSS_SHAPE
    assert abs(x.std().item() - s) / s < 0.05, x.std().item()
    assert abs(x.mean().item()) < 0.02


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
@pytest.mark.parametrize("sampler_name, n", [("dpm_solver_pp", 50), ("dpm_solver_pp_sde", 50), ("heun", 50), ("ddim", 200)])
def test_zero_terminal_snr_recovers_std(sampler_name, n, prediction):
    """Lin et al. 2024's setting: zero terminal SNR, trailing spacing (starts at T - 1, where SNR = 0)."""
    s = 0.5
    schedule = NoiseSchedule.from_config("scaled_linear", 1000, 8.5e-4, 1.2e-2, rescale_zero_terminal_snr=True)
    sampler = SAMPLERS[sampler_name](schedule, prediction=prediction, spacing="trailing")
    sampler.set_timesteps(n)
    assert int(sampler.timesteps[0]) == 999 and schedule.snr(999).item() == 0.0
    x = sample_loop(gaussian_model(schedule, s, prediction), sampler, GAUSS_SHAPE, None, "cpu", progress=False)
    assert abs(x.std().item() - s) / s < 0.05, x.std().item()


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
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


def _ode_error(sampler, s: float, n: int) -> float:
    """Relative error of the final sample against the exact probability-flow ODE map for Gaussian data."""
    sampler.set_timesteps(n)
    t0 = int(sampler.timesteps[0])
    sigma0 = float(sampler.schedule.sigmas[t0])
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = x_T * (1 + sigma0**2) ** 0.5 * s / (s**2 + sigma0**2) ** 0.5  # x_T(VP) -> VE -> sigma = 0
    x, model = x_T * sampler.init_noise_sigma, gaussian_eps_model(sampler.schedule, s)
    for t in sampler.timesteps.tolist():
        x = sampler.step(model(sampler.scale_model_input(x, t), torch.full((64,), t)), t, x)
    return ((x - exact).abs().max() / exact.abs().max()).item()


@pytest.mark.parametrize(
    "sampler, order",
    [
        (lambda s: DPMSolverPPSampler(s), 2),
        (lambda s: HeunSampler(s), 2),
        (lambda s: DDIMSampler(s, spacing="linspace"), 1),
    ],
)
def test_ode_samplers_converge_at_their_order(sampler, order):
    """10 -> 20 steps divides the error by ~2^order: 4 for DPM-Solver++(2M) and Heun, 2 for DDIM (linear
    schedule). Not a general law here: the final first-order step to sigma = 0 has an O(sigma_last^2)
    error, which dominates where sigma at the last grid point is large (e.g. scaled_linear)."""
    schedule = NoiseSchedule.from_config("linear", 1000)
    ratio = _ode_error(sampler(schedule), 0.5, 10) / _ode_error(sampler(schedule), 0.5, 20)
    assert (3.5 < ratio < 6.0) if order == 2 else (1.7 < ratio < 2.3), ratio


@pytest.mark.parametrize(
    "sampler_name, kind, n, opts",
    [
        ("ddpm", "linear", 50, {}),
        ("ddpm", "cosine", 1000, {}),
        ("ddim", "linear", 100, {"eta": 0.5}),
        ("ddpm", "linear", 100, {"spacing": "trailing", "prediction": "v_prediction", "zero_snr": True}),
        ("ddim", "linear", 100, {"spacing": "linspace", "prediction": "sample", "eta": 1.0, "zero_snr": True}),
    ],
)
def test_stochastic_std_matches_variance_recursion(sampler_name, kind, n, opts):
    s = 0.5
    opts = dict(opts)
    schedule = _scaled(kind, 1000, opts.pop("zero_snr", False))
    sampler = SAMPLERS[sampler_name](schedule, **opts)
    sampler.set_timesteps(n)
    gen = torch.Generator().manual_seed(7)
    model = gaussian_model(schedule, s, sampler.prediction)
    x = sample_loop(model, sampler, GAUSS_SHAPE, gen, "cpu", progress=False)
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


def test_sde_solver_needs_its_noise(monkeypatch):
    """SDE-DPM-Solver++ recovers the data's std (test_gaussian_data_recovers_std) only with its noise term:
    without it, the update, which pulls the mean further toward D than the ODE's, collapses the samples."""
    import ldmpipe.diffusion.dpm_solver as dpm_module

    s, schedule = 0.5, _scaled("cosine", 1000)
    sampler = SDEDPMSolverPPSampler(schedule, prediction="v_prediction")
    sampler.set_timesteps(20)
    model = gaussian_model(schedule, s, "v_prediction")
    monkeypatch.setattr(dpm_module, "randn_per_sample", lambda shape, g, dtype, device: torch.zeros(shape, dtype=dtype))
    broken = sample_loop(model, sampler, GAUSS_SHAPE, torch.Generator().manual_seed(1234), "cpu", progress=False)
    assert abs(broken.std().item() - s) / s > 0.2, broken.std().item()


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


ALL_SAMPLERS = [("ddpm", {}), ("ddim", {"eta": 0.5}), ("dpm_solver_pp", {}), ("dpm_solver_pp_sde", {}), ("heun", {})]


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
def test_sample_loop_is_batch_size_invariant(sampler_name, opts):
    """Sample i depends only on its seed; one sampler object serves several batches (state is reset)."""
    schedule = _scaled("linear", 50)
    sampler = SAMPLERS[sampler_name](schedule, **opts)
    sampler.set_timesteps(20)
    model = gaussian_eps_model(schedule, 0.5)
    shape = (2, 4, 4)

    def run(seeds):
        return sample_loop(model, sampler, (len(seeds), *shape), sample_generators(seeds), "cpu", progress=False)

    full = run(list(range(8)))
    assert full.dtype == torch.float32 and full.shape == (8, *shape)
    assert torch.equal(full, torch.cat([run([0, 1, 2, 3]), run([4, 5, 6, 7])]))
    assert torch.equal(full[5:6], run([5]))
    assert not torch.equal(full[0], full[1])


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
@pytest.mark.parametrize("n", [1, 2, 7])
def test_nfe_counts_model_evaluations(sampler_name, opts, n):
    sampler = SAMPLERS[sampler_name](_scaled("linear", 50), **opts)
    sampler.set_timesteps(n)
    calls = []

    def model(x, t):
        calls.append((x.clone(), int(t[0])))
        return torch.zeros_like(x)

    sample_loop(model, sampler, (2, 1, 2, 2), sample_generators([0, 1]), "cpu", progress=False)
    assert sampler.num_inference_steps == n
    assert sampler.nfe == len(calls) == (2 * n - 1 if sampler_name == "heun" else n)
    assert [t for _, t in calls] == sampler.timesteps.tolist()


def test_heun_scales_input_and_initial_noise():
    """Heun works on x / sqrt(abar): x_T has std sqrt(1 + sigma_0^2), the model sees sqrt(abar_t) x."""
    schedule = _scaled("linear", 50)
    sampler = HeunSampler(schedule, spacing="trailing")
    sampler.set_timesteps(5)
    abar = schedule.alphas_cumprod
    assert sampler.init_noise_sigma == pytest.approx((1 / abar[49]).sqrt().item(), rel=1e-12)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert torch.allclose(sampler.scale_model_input(x, 20), abar[20].sqrt() * x, rtol=1e-12)
    seen = []

    def model(x, t):
        seen.append(x.std().item())
        return torch.zeros_like(x)

    sample_loop(model, sampler, (4096, 1, 2, 2), None, "cpu", progress=False)
    assert seen[0] == pytest.approx(1.0, rel=0.03)  # the VP x_T ~ N(0, I)
    for other in (DDPMSampler(schedule), DDIMSampler(schedule), DPMSolverPPSampler(schedule)):
        other.set_timesteps(5)
        assert other.init_noise_sigma == 1.0 and other.scale_model_input(x, 20) is x


def test_sample_loop_progress_goes_to_stderr(capsys):
    sampler = DDIMSampler(_scaled("linear", 50))
    sampler.set_timesteps(5)
    sample_loop(gaussian_eps_model(sampler.schedule, 0.5), sampler, (2, 1, 2, 2), sample_generators([0, 1]), "cpu")
    out, err = capsys.readouterr()
    assert out == "" and "sampling" in err


# --- partial reverse processes (SDEdit / img2img): add_noise, set_begin_index, sample_loop(latents=...) ---


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
def test_sample_loop_from_latents_steps_through_the_rest_of_the_timesteps(sampler_name, opts):
    """The loop from x at timesteps[k] is the sampler's own steps from there, with the same per-sample noise."""
    schedule = _scaled("linear", 50)
    sampler = SAMPLERS[sampler_name](schedule, **opts)
    sampler.set_timesteps(8)
    k, seeds, model = 4, [3, 4, 5], gaussian_eps_model(schedule, 0.5)
    t_k = int(sampler.timesteps[k])
    x = sampler.add_noise(torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), t_k)
    seen = []
    out = sample_loop(model, sampler, x.shape, sample_generators(seeds), "cpu", progress=False, latents=x, begin_index=k,
                      callback=lambda i, t, x_in, o: seen.append((i, t)))  # fmt: skip
    sampler.set_timesteps(8)
    sampler.set_begin_index(k)
    expected, gens = x.clone(), sample_generators(seeds)
    for t in sampler.timesteps.tolist()[k:]:
        t_batch = torch.full((3,), t, dtype=torch.int64)
        expected = sampler.step(model(sampler.scale_model_input(expected, t), t_batch), t, expected, generator=gens)
    assert torch.equal(out, expected)
    assert seen == list(enumerate(sampler.timesteps.tolist()))[k:]


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
def test_partial_reverse_process_keeps_the_data_distribution(sampler_name, opts):
    """x0 ~ N(0, s^2 I) taken forward to t by `add_noise` and back by the optimal network ends at std s: the
    sampler's add_noise puts x in the space its steps work in (VP, or Heun's VE: Heun from the VP x ends
    at std 0.19)."""
    schedule = _scaled("cosine", 200)
    sampler = SAMPLERS[sampler_name](schedule, **opts)
    sampler.set_timesteps(199)  # ~every step: DDPM on a sparse sub-sequence loses variance (fixed-small sigma)
    k, s = 100, 0.5
    x0 = s * torch.randn(GAUSS_SHAPE, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(GAUSS_SHAPE, generator=torch.Generator().manual_seed(1))
    x = sampler.add_noise(x0, eps, int(sampler.timesteps[k]))
    out = sample_loop(gaussian_eps_model(schedule, s), sampler, GAUSS_SHAPE, torch.Generator().manual_seed(2), "cpu",
                      progress=False, latents=x, begin_index=k)  # fmt: skip
    assert out.std().item() == pytest.approx(s, rel=0.05)


def test_partial_reverse_process_errors():
    schedule = _scaled("linear", 50)
    sampler = DDIMSampler(schedule)
    sampler.set_timesteps(5)
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match="begin_index 2 needs latents"):
        sample_loop(lambda x, t: x, sampler, x.shape, None, "cpu", progress=False, begin_index=2)
    with pytest.raises(ValueError, match=r"latents of shape \(2, 1, 2, 2\) for samples of shape \(3, 1, 2, 2\)"):
        sample_loop(lambda x, t: x, sampler, (3, 1, 2, 2), None, "cpu", progress=False, latents=x, begin_index=2)
    with pytest.raises(ValueError, match=r"begin_index 5 outside \[0, 4\]"):
        sampler.set_begin_index(5)
    heun = HeunSampler(schedule)
    heun.set_timesteps(5)
    with pytest.raises(ValueError, match="corrector stage"):
        heun.set_begin_index(3)
    heun.set_begin_index(4)


def test_ddpm_variance_is_beta_tilde_and_scales_only_the_fresh_noise():
    """sigma_t^2 = beta-tilde_t (Ho et al. 2020, eq. 7), 0 at the last step; a subclass that scales it by c^2
    (EDM's S_noise) moves the step by (c - 1) sigma_t z from the same mean."""
    schedule = _scaled("cosine", 50)
    abar = schedule.alphas_cumprod

    class Scaled(DDPMSampler):
        c = 1.0

        def variance(self, t):
            return self.c**2 * super().variance(t)

    sampler = Scaled(schedule, spacing="trailing")
    sampler.set_timesteps(10)
    t, prev = sampler.timesteps.tolist()[3:5]
    assert sampler.variance(t) == pytest.approx(((1 - abar[prev]) / (1 - abar[t]) * (1 - abar[t] / abar[prev])).item(), rel=1e-12)
    assert sampler.variance(int(sampler.timesteps[-1])) == 0.0
    x, out = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    steps = []
    for c in (1.0, 2.0, 3.0):
        sampler.c = c
        steps.append(sampler.step(out, t, x, generator=sample_generators([7, 8])))
    z = randn_per_sample(x.shape, sample_generators([7, 8]))
    torch.testing.assert_close(steps[1] - steps[0], sampler.variance(t) ** 0.5 / 3 * z, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(steps[2] - steps[1], steps[1] - steps[0], atol=1e-6, rtol=1e-5)


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
    ddim = DDIMSampler(schedule, spacing="linspace")
    ddim.set_timesteps(10)
    assert ddim.timesteps.tolist() == list(range(999, -1, -111))
    assert [ddim.previous_timestep(t) for t in (999, 111, 0)] == [888, 0, -1]  # not t - T // n
    dpm = DPMSolverPPSampler(schedule)  # linspace on 11 points without the final 0
    dpm.set_timesteps(10)
    assert dpm.timesteps.tolist() == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    dpm = DPMSolverPPSampler(schedule, spacing="leading")  # k * (T // 11)
    dpm.set_timesteps(10)
    assert dpm.timesteps.tolist() == list(range(900, 0, -90))
    heun = HeunSampler(schedule)
    heun.set_timesteps(4)
    assert heun.timesteps.tolist() == [999, 666, 666, 333, 333, 0, 0]
    for spacing in ("leading", "trailing", "linspace"):
        for sampler in (DDIMSampler(schedule, spacing=spacing), DPMSolverPPSampler(schedule, spacing=spacing)):
            for n in (1, 3, 7, 29, 61, 999):  # always exactly n distinct, descending, in range
                sampler.set_timesteps(n)
                ts = sampler.timesteps
                assert ts.dtype == torch.int64 and ts.shape == (n,)
                assert bool((ts.diff() < 0).all()) and 0 <= int(ts.min()) and int(ts.max()) <= 999


def test_stateful_samplers_insist_on_order():
    schedule = NoiseSchedule.from_config("linear", 100)
    x = torch.zeros(1, 1, 2, 2)
    for sampler in (DPMSolverPPSampler(schedule), SDEDPMSolverPPSampler(schedule), HeunSampler(schedule)):
        sampler.set_timesteps(3)
        ts = sampler.timesteps.tolist()
        with pytest.raises(ValueError, match="in order"):
            sampler.step(x, ts[1], x)  # skipped the first
        for t in ts:
            x = sampler.step(torch.zeros_like(x), t, x)
        with pytest.raises(ValueError, match="finished"):
            sampler.step(x, ts[-1], x)
        sampler.set_timesteps(3)  # resets
        sampler.step(x, ts[0], x)


def test_errors():
    schedule = NoiseSchedule.from_config("linear", 100)
    for sampler in (DDPMSampler(schedule), DDIMSampler(schedule), DPMSolverPPSampler(schedule),
                    SDEDPMSolverPPSampler(schedule), HeunSampler(schedule)):  # fmt: skip
        x = torch.zeros(1, 1, 2, 2)
        with pytest.raises(ValueError, match="set_timesteps"):
            sampler.step(x, 99, x)
        with pytest.raises(ValueError, match="set_timesteps"):
            sampler.nfe
        with pytest.raises(ValueError):
            sampler.set_timesteps(0)
        with pytest.raises(ValueError):
            sampler.set_timesteps(101)
        with pytest.raises(ValueError):
            sampler.set_timesteps(2.5)
        sampler.set_timesteps(99)
        with pytest.raises(ValueError):
            sampler.step(x, 100, x)
        with pytest.raises(ValueError):
            sampler.step(torch.zeros(2, 1, 2, 2), 99, x)
        with pytest.raises(ValueError, match="epsilon, sample, v_prediction"):
            type(sampler)(schedule, prediction="x0")
        with pytest.raises(ValueError, match="leading, trailing, linspace"):
            type(sampler)(schedule, spacing="uniform")
        with pytest.raises(ValueError):
            type(sampler)("linear")
    with pytest.raises(ValueError, match="at most 99"):
        DPMSolverPPSampler(schedule, spacing="leading").set_timesteps(100)  # grid of n + 1 points
    DPMSolverPPSampler(schedule, spacing="trailing").set_timesteps(100)
    with pytest.raises(ValueError, match="not one of"):
        sampler = DDIMSampler(schedule)
        sampler.set_timesteps(10)
        sampler.step(x, 95, x)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=1.5)
    with pytest.raises(ValueError, match="set_timesteps"):
        sample_loop(lambda x, t: x, DDIMSampler(schedule), (1, 1, 2, 2), None, "cpu")
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpm_solver_pp", "dpm_solver_pp_sde", "heun"}


# --- a grid of one's own: set_timesteps(timesteps=[...]) (diffusers' custom timesteps) ------------------


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_custom_timesteps_equal_to_a_spacing_give_the_same_samples(sampler_name, opts, spacing):
    """A spacing's own grid passed as `timesteps` is the spaced sampler, bit for bit, batch after batch."""
    schedule = _scaled("cosine", 100)
    spaced = SAMPLERS[sampler_name](schedule, spacing=spacing, **opts)
    spaced.set_timesteps(7)
    grid = spaced.timesteps.unique_consecutive().tolist()  # Heun lists each but the first twice
    custom = SAMPLERS[sampler_name](schedule, spacing="leading" if spacing != "leading" else "trailing", **opts)
    custom.set_timesteps(timesteps=grid)
    assert torch.equal(custom.timesteps, spaced.timesteps) and custom.nfe == spaced.nfe
    model, seeds = gaussian_eps_model(schedule, 0.5), [5, 6, 7]
    for _ in range(2):  # the loop's reset keeps the grid
        a = sample_loop(model, spaced, (3, 1, 2, 2), sample_generators(seeds), "cpu", progress=False)
        b = sample_loop(model, custom, (3, 1, 2, 2), sample_generators(seeds), "cpu", progress=False)
        assert torch.equal(a, b)
        assert custom.custom_timesteps.tolist() == grid and spaced.custom_timesteps is None


@pytest.mark.parametrize("sampler_name, opts", ALL_SAMPLERS)
def test_custom_timesteps_are_visited_and_keep_the_data_distribution(sampler_name, opts):
    """An uneven grid (diffusers' "Align Your Steps" for Stable Diffusion, Sabour et al. 2024, on SD's schedule)
    is what the loop evaluates, and with the optimal network for x0 ~ N(0, s^2 I) the samples end at std s
    (the ODE and SDE solvers: within 2 % in 10 steps), or at the std that the scalar recursion predicts on
    that grid (DDPM and DDIM with eta > 0, which lose variance on a sparse grid)."""
    schedule = NoiseSchedule.from_config("scaled_linear", 1000, 8.5e-4, 1.2e-2)
    sampler = SAMPLERS[sampler_name](schedule, prediction="v_prediction", **opts)
    grid = [999, 850, 736, 645, 545, 455, 343, 233, 124, 24]
    sampler.set_timesteps(timesteps=torch.tensor(grid))
    seen = []
    x = sample_loop(gaussian_model(schedule, 0.5, "v_prediction"), sampler, GAUSS_SHAPE,
                    torch.Generator().manual_seed(0), "cpu", progress=False,
                    callback=lambda i, t, x_in, out: seen.append(t))  # fmt: skip
    assert seen == sampler.timesteps.tolist() and list(dict.fromkeys(seen)) == grid
    expected = predicted_gain_and_std(sampler, 0.5)[1] if sampler_name in ("ddpm", "ddim") else 0.5
    assert x.std().item() == pytest.approx(expected, rel=0.03)


def test_custom_timesteps_errors():
    schedule = NoiseSchedule.from_config("linear", 100)
    for sampler in (DDPMSampler(schedule), DDIMSampler(schedule), DPMSolverPPSampler(schedule), HeunSampler(schedule)):
        for bad, match in [
            (None, "exactly one of num_inference_steps and timesteps"),
            ([], "at least one"),
            ([50, 20.5], "integers"),
            ([50, True], "integers"),
            ([50, "20"], "integers"),
            ([50, float("nan")], "integers"),
            ([20, 50], "strictly descending"),
            ([50, 50, 10], "strictly descending"),
            ([100, 10], r"in \[0, 99\]"),
            ([50, -1], r"in \[0, 99\]"),
        ]:
            with pytest.raises(ValueError, match=match):
                sampler.set_timesteps(timesteps=bad) if bad is not None else sampler.set_timesteps()
        with pytest.raises(ValueError, match="exactly one"):
            sampler.set_timesteps(3, timesteps=[50, 10])
        sampler.set_timesteps(timesteps=[99.0, 40, 0])  # integral floats are integers
        assert sampler.custom_timesteps.tolist() == [99, 40, 0]
        sampler.set_timesteps(4)  # back to the spacing
        assert sampler.custom_timesteps is None and sampler.num_inference_steps == 4

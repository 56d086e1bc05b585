"""Noise schedules: betas, derived tables, forward process q(x_t | x_0)."""

import dataclasses
import math

import pytest
import torch

from ldmpipe.diffusion import SCHEDULES, NoiseSchedule, make_betas


def _reference_cosine_betas(T: int, max_beta: float = 0.999) -> list[float]:
    """Independent re-implementation of diffusers' `betas_for_alpha_bar` (alpha_transform_type="cosine")."""
    f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
    return [min(1 - f[i + 1] / f[i], max_beta) for i in range(T)]


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_shapes_dtypes_monotone(kind, T):
    betas = make_betas(kind, T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    s = NoiseSchedule.from_config(kind, T)
    assert s.num_timesteps == T
    for name in ("betas", "alphas", "alphas_cumprod"):
        v = getattr(s, name)
        assert v.dtype == torch.float64 and v.shape == (T,), name
    assert torch.equal(s.betas, betas)
    assert torch.equal(s.alphas, 1 - betas)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=0, atol=0)
    abar = s.alphas_cumprod
    assert bool((abar > 0).all()) and bool((abar < 1).all())
    assert bool((abar[1:] < abar[:-1]).all()), "alpha-bar must be strictly decreasing"


def test_linear_and_scaled_linear_values():
    lin = make_betas("linear", 1000, 1e-4, 2e-2)
    assert lin[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert lin[-1].item() == pytest.approx(2e-2, rel=1e-12)
    assert torch.allclose(lin.diff(), torch.full((999,), (2e-2 - 1e-4) / 999, dtype=torch.float64))
    sl = make_betas("scaled_linear", 1000, 8.5e-4, 1.2e-2)
    assert sl[0].item() == pytest.approx(8.5e-4, rel=1e-12)
    assert sl[-1].item() == pytest.approx(1.2e-2, rel=1e-12)
    step = (1.2e-2**0.5 - 8.5e-4**0.5) / 999
    assert torch.allclose(sl.sqrt().diff(), torch.full((999,), step, dtype=torch.float64))
    assert not torch.allclose(sl, make_betas("linear", 1000, 8.5e-4, 1.2e-2))


@pytest.mark.parametrize("T", [10, 200, 1000])
def test_cosine_matches_betas_for_alpha_bar(T):
    ours = make_betas("cosine", T)
    ref = torch.tensor(_reference_cosine_betas(T), dtype=torch.float64)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
    assert ours.max().item() <= 0.999
    if T == 1000:
        assert ours[-1].item() == 0.999  # the clip is active at the end of a long schedule


def test_cosine_matches_diffusers_if_installed():
    ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")
    for T in (10, 1000):
        theirs = ddpm.betas_for_alpha_bar(T)  # float32
        assert torch.equal(make_betas("cosine", T).to(torch.float32), theirs)


def test_add_noise_closed_form():
    s = NoiseSchedule.from_config("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, 4, generator=g)
    eps = torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 998, 999])
    out = s.add_noise(x0, eps, t)
    assert out.dtype == torch.float32 and out.shape == x0.shape
    for i, ti in enumerate(t.tolist()):
        abar = 1.0
        for b in make_betas("linear", 1000)[: ti + 1].tolist():
            abar *= 1.0 - b
        ref = math.sqrt(abar) * x0[i].double() + math.sqrt(1 - abar) * eps[i].double()
        assert torch.allclose(out[i].double(), ref, rtol=0, atol=1e-6)
    # float64 in -> float64 out, and a scalar t broadcasts over the batch
    out64 = s.add_noise(x0.double(), eps.double(), 250)
    assert out64.dtype == torch.float64
    assert torch.allclose(out64[2], out[2].double(), atol=1e-6)
    assert torch.allclose(s.add_noise(x0, eps, torch.zeros(5, dtype=torch.long)), x0, atol=0.06)


def test_snr():
    s = NoiseSchedule.from_config("cosine", 100)
    t = torch.tensor([0, 50, 99])
    abar = s.alphas_cumprod[t]
    assert torch.allclose(s.snr(t), abar / (1 - abar))
    assert s.snr(0).item() == pytest.approx((abar[0] / (1 - abar[0])).item())
    assert bool((s.snr(torch.arange(100)).diff() < 0).all())


def test_errors():
    with pytest.raises(ValueError, match="linear, scaled_linear, cosine, sigmoid"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="quadratic"):
        NoiseSchedule.from_config("quadratic", 10)
    with pytest.raises(ValueError):
        make_betas("linear", 0)
    with pytest.raises(ValueError):
        make_betas("linear", 10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError):
        NoiseSchedule.from_betas(torch.tensor([0.1, 1.5]))
    s = NoiseSchedule.from_config("linear", 10)
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError):
        s.add_noise(x, x, torch.tensor([0, 10]))  # t out of range
    with pytest.raises(ValueError):
        s.add_noise(x, x, torch.tensor([0, 1, 2]))  # batch mismatch
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.betas = torch.zeros(10)


def test_sigmoid_matches_diffusers_if_installed():
    diffusers = pytest.importorskip("diffusers")
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="sigmoid", beta_start=1e-4, beta_end=2e-2)
    ours = make_betas("sigmoid", 1000, 1e-4, 2e-2)
    assert torch.allclose(ours.float(), theirs.betas, rtol=1e-6, atol=0)
    assert ours[0].item() == pytest.approx(1e-4 + (2e-2 - 1e-4) / (1 + math.exp(6)), rel=1e-12)
    assert ours[-1].item() == pytest.approx(1e-4 + (2e-2 - 1e-4) / (1 + math.exp(-6)), rel=1e-12)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_rescale_to_zero_terminal_snr(kind):
    """Lin et al. 2024, Algorithm 1: abar_0 kept, abar_{T-1} = 0 exactly (beta = 1), SNR 0 at the end."""
    plain = NoiseSchedule.from_config(kind, 1000)
    s = NoiseSchedule.from_config(kind, 1000, rescale_zero_terminal_snr=True)
    assert s.betas[-1].item() == 1.0 and s.alphas_cumprod[-1].item() == 0.0 and s.snr(999).item() == 0.0
    assert s.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-12)
    assert bool((s.alphas_cumprod.diff() < 0).all()) and bool((s.betas[:-1] < 1).all())
    sigmas = s.sigmas  # abar = 0 read as 2**-24, as diffusers' DPM-Solver does
    assert bool(torch.isfinite(sigmas).all()) and sigmas[-1].item() == pytest.approx(4096.0, rel=1e-7)
    assert torch.allclose(sigmas[:-1], ((1 - s.alphas_cumprod[:-1]) / s.alphas_cumprod[:-1]).sqrt(), rtol=1e-15)
    ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")
    theirs = ddpm.rescale_zero_terminal_snr(plain.betas.clone())  # float64 in, float64 out
    assert torch.allclose(s.betas, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers
def test_sigmas_match_diffusers_dpm_solver_if_installed():
    """diffusers' DPM-Solver (rescale_betas_zero_snr=True) in float32: same sigma table, 2**-24 included."""
    diffusers = pytest.importorskip("diffusers")
    for zero_snr in (False, True):
        ref = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=8.5e-4, beta_end=1.2e-2,
            rescale_betas_zero_snr=zero_snr, timestep_spacing="trailing",
        )  # fmt: skip
        ref.set_timesteps(20)
        ours = NoiseSchedule.from_config("scaled_linear", 1000, 8.5e-4, 1.2e-2, rescale_zero_terminal_snr=zero_snr)
        expected = torch.cat([ours.sigmas[ref.timesteps], torch.zeros(1, dtype=torch.float64)])
        assert torch.allclose(ref.sigmas.double(), expected, rtol=2e-5, atol=0)


def test_from_betas_zero_snr_only_at_the_end():
    NoiseSchedule.from_betas(torch.tensor([0.1, 0.5, 1.0]))
    with pytest.raises(ValueError):
        NoiseSchedule.from_betas(torch.tensor([0.1, 1.0, 0.5]))
    with pytest.raises(ValueError, match="at least 2"):
        make_betas("linear", 1, rescale_zero_terminal_snr=True)


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("factor", [0.25, 4.0])
def test_snr_shift_multiplies_every_snr(kind, factor):
    """Hoogeboom et al. 2023: SNR'_t = factor * SNR_t at every t; noisier everywhere for factor < 1."""
    plain = NoiseSchedule.from_config(kind, 1000)
    shifted = NoiseSchedule.from_config(kind, 1000, snr_shift=factor)
    assert torch.allclose(shifted.snr(torch.arange(1000)), factor * plain.snr(torch.arange(1000)), rtol=1e-9, atol=0)
    assert bool((shifted.betas > 0).all()) and bool((shifted.betas < 1).all())
    assert bool((shifted.alphas_cumprod < plain.alphas_cumprod).all()) == (factor < 1)


def test_snr_shift_of_one_is_the_schedule_itself():
    assert torch.equal(make_betas("cosine", 1000, snr_shift=1.0), make_betas("cosine", 1000))
    with pytest.raises(ValueError, match="must be > 0"):
        make_betas("cosine", 1000, snr_shift=0.0)


def test_snr_shift_then_zero_terminal_snr_as_diffusers():
    """With both, the shift comes first and the rescale after, as diffusers applies rescale_betas_zero_snr
    to trained_betas (how a shifted schedule is exported)."""
    s = NoiseSchedule.from_config("cosine", 1000, snr_shift=0.25, rescale_zero_terminal_snr=True)
    assert s.betas[-1].item() == 1.0 and s.snr(999).item() == 0.0
    ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")
    theirs = ddpm.rescale_zero_terminal_snr(make_betas("cosine", 1000, snr_shift=0.25))
    assert torch.allclose(s.betas, theirs, rtol=1e-12, atol=1e-15)

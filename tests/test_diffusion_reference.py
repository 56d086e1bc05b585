"""Every sampler against its diffusers scheduler (0.42.1), step by step, in float64.

Each side gets the same deterministic model function and the same noise, over a grid of schedules
(linear, scaled_linear, cosine, sigmoid, and scaled_linear rescaled to zero terminal SNR) x prediction
types x step counts x spacings; every intermediate sample must agree to a max relative difference of
1e-6 (in practice <= 1e-14 for the deterministic samplers, <= 3e-9 for DDPM, whose last trailing step
diffusers gives a 1e-10 z of noise), and the timesteps exactly. Perturbing any sampler formula (even
a coefficient by 1e-4) makes them fail.

Float64: diffusers casts `trained_betas` to float32. For DDPM/DDIM we overwrite its `betas`/`alphas`/
`alphas_cumprod` with our float64 tables after construction. DPM-Solver++ and Heun precompute float32
`sigmas` in `set_timesteps`: after it we first check them against ours (float32 precision, where
finite), then overwrite them with our float64 `schedule.sigmas` in diffusers' layout (DPM: sigma(t_i)
then 0; Heun: sigma_0, sigma_1, sigma_1, ..., sigma_{n-1}, sigma_{n-1}, 0). DPM's `step` casts the sample
to float32 before its update; a test-only subclass hands the update functions the float64 sample
instead. With zero terminal SNR, sigma(T-1) uses abar = 2**-24 as diffusers' DPM-Solver does (diffusers'
Heun has no zero-SNR option; we feed it the same table). Epsilon prediction cannot give x0 at SNR 0:
DDPM/DDIM raise there (diffusers returns inf/nan), which is checked instead of compared.

Noise: diffusers draws it with `randn_tensor(shape, generator=list, dtype=model_output.dtype)`, i.e.
row i from torch.randn((1, ...), generator=gens[i]) on CPU, as our `randn_per_sample` does; each side
gets its own list of CPU generators with identical seeds.

Timesteps: ours are exact (see `spacing`); the grid uses step counts where diffusers' float arithmetic
gives the same ones. DDIM: diffusers lands on t - T // n, wrong for linspace, so DDIM is compared to
DDIMScheduler on leading/trailing (n | T), and on linspace to DDPMScheduler (eta = 1: the same process,
Song et al. sec. 4.1) and to first-order DPM-Solver++ on our timesteps (eta = 0: the same update).
"""

import functools

import pytest
import torch

from ldmpipe.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    SDEDPMSolverPPSampler,
    HeunSampler,
    NoiseSchedule,
    sample_generators,
)

diffusers = pytest.importorskip("diffusers")
# diffusers calls np.array() on our float64 torch tables in set_timesteps; harmless
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

T = 1000
SHAPE = (3, 2, 4, 4)
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
SPACINGS = ["leading", "trailing", "linspace"]
SCHEDULES = {  # id -> (kind, beta_start, beta_end, rescale_zero_terminal_snr)
    "linear": ("linear", 1e-4, 2e-2, False),
    "scaled_linear": ("scaled_linear", 8.5e-4, 1.2e-2, False),  # the LDM range
    "cosine": ("cosine", 1e-4, 2e-2, False),
    "sigmoid": ("sigmoid", 1e-4, 2e-2, False),
    "zero_snr": ("scaled_linear", 8.5e-4, 1.2e-2, True),
}


@functools.cache
def schedule_for(name: str) -> NoiseSchedule:
    kind, b0, b1, zsnr = SCHEDULES[name]
    return NoiseSchedule.from_config(kind, T, b0, b1, rescale_zero_terminal_snr=zsnr)


def fake_model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for the network (its output read as eps, x0 or v)."""
    return 0.3 * torch.tanh(x) + 1e-3 * t


def _reference(cls, schedule: NoiseSchedule, prediction: str, **kw):
    ref = cls(num_train_timesteps=T, trained_betas=schedule.betas.numpy(), prediction_type=prediction, **kw)
    ref.betas, ref.alphas = schedule.betas.clone(), schedule.alphas.clone()
    ref.alphas_cumprod = schedule.alphas_cumprod.clone()
    return ref


def _use_float64_sigmas(ref, schedule: NoiseSchedule, heun: bool) -> None:
    grid = ref.timesteps[::2] if heun else ref.timesteps  # Heun lists t_1.. twice
    s = torch.cat([schedule.sigmas[grid.to(torch.int64)], torch.zeros(1, dtype=torch.float64)])
    if heun:
        s = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
    theirs = ref.sigmas.to(torch.float64)
    finite = torch.isfinite(theirs)
    assert theirs.shape == s.shape and torch.allclose(theirs[finite], s[finite], rtol=1e-5, atol=0)
    ref.sigmas = s


class _DPMFloat64:
    """Mixin for DPMSolverMultistepScheduler: its `step` casts the sample to float32 before the update."""

    def step(self, model_output, timestep, sample, *args, **kwargs):
        self._sample64 = sample
        return super().step(model_output, timestep, sample, *args, **kwargs)

    def dpm_solver_first_order_update(self, model_output, *args, sample=None, **kwargs):
        return super().dpm_solver_first_order_update(model_output, *args, sample=self._sample64, **kwargs)

    def multistep_dpm_solver_second_order_update(self, model_outputs, *args, sample=None, **kwargs):
        return super().multistep_dpm_solver_second_order_update(model_outputs, *args, sample=self._sample64, **kwargs)


DPMSolverFloat64 = type("DPMSolverFloat64", (_DPMFloat64, diffusers.DPMSolverMultistepScheduler), {})


def compare(ours, ref, n: int | None, *, stochastic: bool = False, ref_step_kwargs=None, ref_timesteps=None,
            begin: int = 0, custom=None):  # fmt: skip
    """Run both from the same x_T with the same model and noise; assert every intermediate sample agrees.

    ``custom``: a grid of one's own instead of n spaced steps, given to both sides' `set_timesteps(timesteps=)`.

    ``begin`` > 0: a partial reverse process, as diffusers' img2img pipelines run it: `set_begin_index`,
    then both sides take the same x0 and noise to `timesteps[begin]` with their own `add_noise` (which
    must agree) and step from there."""
    if custom is not None:
        ours.set_timesteps(timesteps=custom)
        ref_timesteps = custom if ref_timesteps is None else ref_timesteps
    else:
        ours.set_timesteps(n)
    if ref_timesteps is None:
        ref.set_timesteps(n)
    else:
        ref.set_timesteps(timesteps=ref_timesteps)
    assert ours.timesteps.dtype == torch.int64 and ours.nfe == len(ours.timesteps)
    assert torch.equal(ref.timesteps, ref.timesteps.round()), "diffusers uses fractional timesteps here"
    assert torch.equal(ours.timesteps, ref.timesteps.to(torch.int64))
    if isinstance(ref, (diffusers.DPMSolverMultistepScheduler, diffusers.HeunDiscreteScheduler)):
        _use_float64_sigmas(ref, ours.schedule, heun=isinstance(ref, diffusers.HeunDiscreteScheduler))
    kw = dict(ref_step_kwargs or {})
    gens_ours = sample_generators([11, 12, 13]) if stochastic else None
    if stochastic:
        kw["generator"] = sample_generators([11, 12, 13])
    if begin:
        t = int(ours.timesteps[begin])
        x0, eps = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in (1, 2))
        ours.set_begin_index(begin)
        if hasattr(ref, "set_begin_index"):  # DDPM/DDIM keep no step index
            ref.set_begin_index(begin)
        x, y = ours.add_noise(x0, eps, t), ref.add_noise(x0, eps, torch.tensor([t]))
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    else:
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * ours.init_noise_sigma
        y = x.clone()
    for t in ours.timesteps.tolist()[begin:]:
        x = ours.step(fake_model(ours.scale_model_input(x, t), t), t, x, generator=gens_ours)
        y = ref.step(fake_model(ref.scale_model_input(y, t), t), t, y, return_dict=False, **kw)[0]
        assert x.dtype == torch.float64 and y.dtype == torch.float64
        rel = ((x - y).abs().max() / y.abs().max()).item()
        assert rel <= 1e-6, f"t={t}: max relative difference {rel:.3g}"
    assert torch.isfinite(x).all()


def _zero_snr_eps_raises(sampler, n: int) -> bool:
    """Epsilon prediction at SNR 0 (trailing starts at T - 1) has no x0: ours raises (diffusers: inf/nan)."""
    if sampler.prediction != "epsilon" or float(sampler.schedule.alphas_cumprod[-1]) != 0.0:
        return False
    sampler.set_timesteps(n)
    if int(sampler.timesteps[0]) != T - 1:
        return False
    x = torch.ones(SHAPE, dtype=torch.float64)
    with pytest.raises(ValueError, match="zero SNR"):
        sampler.step(x, T - 1, x)
    return True


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [7, 50])
def test_ddpm(name, prediction, spacing, n):
    ours = DDPMSampler(schedule_for(name), prediction=prediction, spacing=spacing)
    if not _zero_snr_eps_raises(ours, n):
        ref = _reference(diffusers.DDPMScheduler, ours.schedule, prediction, variance_type="fixed_small",
                         clip_sample=False, timestep_spacing=spacing)  # fmt: skip
        compare(ours, ref, n, stochastic=True)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n, eta", [(10, 0.0), (50, 0.5), (20, 1.0)])
def test_ddim(name, prediction, spacing, n, eta):
    ours = DDIMSampler(schedule_for(name), eta=eta, spacing=spacing, prediction=prediction)
    if not _zero_snr_eps_raises(ours, n):
        ref = _reference(diffusers.DDIMScheduler, ours.schedule, prediction, clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing=spacing)  # fmt: skip
        compare(ours, ref, n, stochastic=eta > 0, ref_step_kwargs={"eta": eta})


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("n", [7, 50])
def test_ddim_linspace(name, prediction, n):
    """eta = 1 is DDPM on the same sub-sequence; eta = 0 is first-order DPM-Solver++ on our timesteps
    (not at zero terminal SNR, where DPM-Solver reads abar = 0 as 2**-24 and DDIM does not)."""
    schedule = schedule_for(name)
    ancestral = DDIMSampler(schedule, eta=1.0, spacing="linspace", prediction=prediction)
    if _zero_snr_eps_raises(ancestral, n):
        return
    ref = _reference(diffusers.DDPMScheduler, schedule, prediction, variance_type="fixed_small",
                     clip_sample=False, timestep_spacing="linspace")  # fmt: skip
    compare(ancestral, ref, n, stochastic=True)
    if name == "zero_snr":
        return
    deterministic = DDIMSampler(schedule, eta=0.0, spacing="linspace", prediction=prediction)
    deterministic.set_timesteps(n)
    ref = _reference(DPMSolverFloat64, schedule, prediction, solver_order=1, algorithm_type="dpmsolver++")
    compare(deterministic, ref, n, ref_timesteps=deterministic.timesteps.tolist())


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 8, 20])
@pytest.mark.parametrize("cls, algorithm", [(DPMSolverPPSampler, "dpmsolver++"), (SDEDPMSolverPPSampler, "sde-dpmsolver++")])
def test_dpm_solver_pp(name, prediction, spacing, n, cls, algorithm):
    """The ODE solver, and the SDE one with its noise: both sides draw z per row from the same seeds at
    every step, in float32."""
    ours = cls(schedule_for(name), prediction=prediction, spacing=spacing)
    ref = _reference(DPMSolverFloat64, ours.schedule, prediction, algorithm_type=algorithm, solver_order=2,
                     timestep_spacing=spacing)  # fmt: skip
    compare(ours, ref, n, stochastic=algorithm.startswith("sde"))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 10, 28])  # n - 1 | T - 1: diffusers' linspace timesteps are integers
def test_heun(name, prediction, spacing, n):
    ours = HeunSampler(schedule_for(name), prediction=prediction, spacing=spacing)
    ref = _reference(diffusers.HeunDiscreteScheduler, ours.schedule, prediction, timestep_spacing=spacing)
    compare(ours, ref, n)
    assert ours.nfe == 2 * n - 1


@pytest.mark.parametrize(
    "make, cls, kw",
    [
        (lambda s: DDPMSampler(s, spacing="trailing"), diffusers.DDPMScheduler,
         {"variance_type": "fixed_small", "clip_sample": False, "timestep_spacing": "trailing"}),
        (lambda s: DDIMSampler(s), diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True}),
        (lambda s: DPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2}),
        (lambda s: SDEDPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
        (lambda s: HeunSampler(s), diffusers.HeunDiscreteScheduler, {}),
    ],
)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("begin", [2, 6])
def test_partial_reverse_process(make, cls, kw, prediction, begin):
    """`add_noise` and `set_begin_index` against diffusers' (SDEdit / img2img): from timesteps[begin] on, every
    sample agrees; the multistep solver starts first order there, Heun at a predictor stage."""
    ours = make(schedule_for("cosine"))
    ours.prediction = prediction
    ref = _reference(cls, ours.schedule, prediction, **kw)
    compare(ours, ref, 10, stochastic=isinstance(ours, (DDPMSampler, SDEDPMSolverPPSampler)), begin=begin)


CUSTOM_GRIDS = {  # a grid of one's own: diffusers' "Align Your Steps" (Sabour et al. 2024), one ending at t = 0,
    "ays": diffusers.schedulers.AysSchedules["StableDiffusionTimesteps"],  # one starting at SNR 0 (T - 1) ...
    "to_zero": [999, 900, 640, 333, 120, 41, 7, 0],
    "one": [517],  # ... and a single step
}


@pytest.mark.parametrize("name", ["linear", "cosine", "zero_snr"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("grid", CUSTOM_GRIDS)
@pytest.mark.parametrize(
    "make, cls, kw",
    [
        (lambda s: DDPMSampler(s), diffusers.DDPMScheduler, {"variance_type": "fixed_small", "clip_sample": False}),
        (lambda s: DPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2}),
        (lambda s: SDEDPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
        (lambda s: HeunSampler(s), diffusers.HeunDiscreteScheduler, {}),
        # diffusers' DDIM takes no grid: eta = 1 is DDPM on it, eta = 0 first-order DPM-Solver++ (module docstring)
        (lambda s: DDIMSampler(s, eta=1.0), diffusers.DDPMScheduler, {"variance_type": "fixed_small", "clip_sample": False}),
        (lambda s: DDIMSampler(s, eta=0.0), DPMSolverFloat64, {"solver_order": 1}),
    ],
)
def test_custom_timesteps(make, cls, kw, grid, prediction, name):
    """`set_timesteps(timesteps=[...])` against diffusers' on the same grid: the spacing is ignored, every
    sample agrees."""
    ours = make(schedule_for(name))
    ours.prediction = prediction
    timesteps = CUSTOM_GRIDS[grid]
    if name == "zero_snr" and (prediction == "epsilon" or isinstance(ours, DDIMSampler) and ours.eta == 0.0):
        return  # no x0 from eps at SNR 0 (ours raises: test_ddpm); DPM-Solver reads abar = 0 as 2**-24, DDIM not
    ref = _reference(cls, ours.schedule, prediction, **kw)
    compare(ours, ref, None, custom=timesteps, stochastic=isinstance(ours, (DDPMSampler, SDEDPMSolverPPSampler))
            or getattr(ours, "eta", 0.0) > 0)  # fmt: skip
    assert ours.custom_timesteps.tolist() == timesteps and ours.num_inference_steps == len(timesteps)


@pytest.mark.parametrize(
    "make, cls, kw",
    [
        (lambda s: DDPMSampler(s), diffusers.DDPMScheduler, {"variance_type": "fixed_small", "clip_sample": False}),
        (lambda s: DDIMSampler(s), diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True}),
    ],
)
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_all_training_steps(make, cls, kw, name):
    """n = T (every timestep), leading, epsilon: the defaults."""
    ours = make(schedule_for(name))
    compare(ours, _reference(cls, ours.schedule, "epsilon", **kw), T, stochastic=isinstance(ours, DDPMSampler))


@pytest.mark.parametrize(
    "ours, ref_cls, kw",
    [
        (lambda s: DDIMSampler(s, eta=0.5), diffusers.DDIMScheduler, {"set_alpha_to_one": True, "clip_sample": False}),
        (lambda s: DPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2}),
        (lambda s: SDEDPMSolverPPSampler(s), DPMSolverFloat64, {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
        (lambda s: HeunSampler(s), diffusers.HeunDiscreteScheduler, {}),
    ],
)
def test_comparison_is_sensitive(ours, ref_cls, kw):
    """Guard against a vacuous comparison: a different prediction type on one side must be detected."""
    schedule = schedule_for("linear")
    with pytest.raises(AssertionError):
        compare(ours(schedule), _reference(ref_cls, schedule, "v_prediction", **kw), 10,
                stochastic=ref_cls is diffusers.DDIMScheduler or "algorithm_type" in kw,
                ref_step_kwargs={"eta": 0.5} if ref_cls is diffusers.DDIMScheduler else None)  # fmt: skip

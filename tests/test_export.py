"""``ldmpipe export``: the folder diffusers loads, and its samples against ours, on random tiny models.

The exported UNet is our code, so its outputs equal ours bit for bit; the schedulers are diffusers'
own (float32 tables where ours are float64), so final latents agree to 1e-4 (measured: <= 1e-6 here).
The end-to-end export of a trained tiny run (with a pretrained diffusers VAE) is in
test_pretrained_vae.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, TINY

pytest.importorskip("diffusers")

from ldmpipe.cli import main  # noqa: E402
from ldmpipe.config import ConfigError, SampleConfig  # noqa: E402
from ldmpipe.diffusion import sample_generators  # noqa: E402
from ldmpipe.diffusion.sampling import sample_loop  # noqa: E402
from ldmpipe.diffusion.schedule import ZERO_SNR_ABAR  # noqa: E402
from ldmpipe.export import export_pipeline, scheduler_for  # noqa: E402
from ldmpipe.generate import make_sampler, schedule_of  # noqa: E402
from ldmpipe.io import ArtifactError  # noqa: E402
from ldmpipe.models.checkpoint import save_model  # noqa: E402
from ldmpipe.diffusers_models import LDMPipeAutoencoder, LDMPipeUNet  # noqa: E402
from ldmpipe.models.unet import UNet  # noqa: E402
from ldmpipe.models.vae import AutoencoderKL  # noqa: E402
from ldmpipe.models.vq import AutoencoderVQ  # noqa: E402
from ldmpipe.pipeline_ldmpipe import LDMPipePipeline  # noqa: E402

HELPER = ROOT / "tests" / "helpers" / "sample_exported.py"
DIFFUSION = dict(timesteps=100, schedule="linear", beta_start=1e-4, beta_end=0.02, zero_terminal_snr=False,
                 prediction="epsilon", loss_weighting="none", min_snr_gamma=5.0)  # fmt: skip
SCALE = 1.7  # the latent scale factor stored with the UNet
SEEDS = [11, 12, 13]
TOL = 1e-4


def random_unet(seed: int = 0) -> UNet:
    """The tiny config's UNet (4 x 8 x 8 latents) with a non-zero output layer (it starts at zero)."""
    torch.manual_seed(seed)
    unet = UNet(4, 8, 32, (1, 2), 1, (4,))
    with torch.no_grad():
        unet.out[-1].weight.normal_(0, 0.05)
    return unet.eval()


def random_class_unet(seed: int = 0, scale_shift: bool = True) -> UNet:
    """``random_unet`` with 3 classes, their embedding added or as adaptive GroupNorm (``scale_shift``),
    with embeddings that change the output visibly."""
    torch.manual_seed(seed)
    unet = UNet(4, 8, 32, (1, 2), 1, (4,), num_classes=3, scale_shift=scale_shift)
    with torch.no_grad():
        unet.out[-1].weight.normal_(0, 0.05)
        unet.class_embed.weight.normal_(0, 1.0)
    return unet.eval()


def random_vae(kind: str) -> AutoencoderKL | AutoencoderVQ:
    torch.manual_seed(1)
    if kind == "kl":
        return AutoencoderKL(3, 16, 4, 4).eval()
    return AutoencoderVQ(3, 16, 4, 4, codebook_size=16, beta=0.25, ema=True, decay=0.99, dead_threshold=1.0).eval()


def sample_cfg(sampler: str = "ddim", steps: int = 5, spacing: str = "leading", eta: float = 0.0) -> SampleConfig:
    return SampleConfig(sampler=sampler, steps=steps, spacing=spacing, eta=eta, n_samples=3, batch_size=3, grid_size=3,
                        guidance_scale=1.0, autoguidance=1.0, classes=None)  # fmt: skip


def ours(unet: UNet, vae, cfg: SampleConfig, diffusion: dict = DIFFUSION) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Our sampler's final scaled latents (B, 4, 8, 8) and (vae not None) the decoded images in [0, 1] (B, 3, 32, 32)."""
    sampler = make_sampler(cfg.sampler, schedule_of(diffusion), prediction=diffusion["prediction"], spacing=cfg.spacing,
                           eta=cfg.eta)  # fmt: skip
    sampler.set_timesteps(cfg.steps)
    z = sample_loop(unet, sampler, (len(SEEDS), 4, 8, 8), sample_generators(SEEDS), "cpu", progress=False)
    if vae is None:
        return z, None
    with torch.no_grad():
        return z, (vae.decode_latents(z / SCALE) / 2 + 0.5).clamp(0, 1)


@pytest.fixture
def checkpoints(tmp_path) -> dict[str, Path]:
    paths = {"unet": tmp_path / "unet.safetensors", "kl": tmp_path / "kl.safetensors", "vq": tmp_path / "vq.safetensors"}
    save_model(random_unet(), paths["unet"], extra={"scale_factor": SCALE, "diffusion": DIFFUSION})
    for kind in ("kl", "vq"):
        save_model(random_vae(kind), paths[kind])
    return paths


def test_unet_wrapper_is_our_unet():
    unet = random_unet()
    wrapped = LDMPipeUNet(**unet.config).eval()
    wrapped.unet.load_state_dict(unet.state_dict())
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(wrapped(x, torch.tensor(37)).sample, unet(x, torch.full((3,), 37)))  # scalar t, as schedulers give it
        t = torch.tensor([0, 50, 99])
        assert torch.equal(wrapped(x, t).sample, unet(x, t))


@pytest.mark.parametrize(
    "sampler, spacing, eta",
    [("ddim", "leading", 0.0), ("ddim", "trailing", 0.5), ("dpm_solver_pp", "leading", 0.0),
     ("dpm_solver_pp", "trailing", 0.0), ("dpm_solver_pp_sde", "leading", 0.0), ("dpm_solver_pp_sde", "trailing", 0.0),
     ("ddpm", "leading", 0.0), ("heun", "leading", 0.0)],
)  # fmt: skip
def test_pipeline_samples_as_our_sampler(sampler, spacing, eta):
    """The exported scheduler (chosen by sample.sampler) in LDMPipePipeline, against our sampler: the same
    x_T and per-sample noise (one CPU generator per seed) give the same latents and images."""
    unet, vae = random_unet(), random_vae("kl")
    cfg = sample_cfg(sampler, 4, spacing, eta)
    hf_unet = LDMPipeUNet(**unet.config).eval()
    hf_unet.unet.load_state_dict(unet.state_dict())
    hf_vae = LDMPipeAutoencoder(kind="kl", **vae.config, scaling_factor=SCALE).eval()
    hf_vae.autoencoder.load_state_dict(vae.state_dict())
    pipe = LDMPipePipeline(hf_unet, hf_vae, scheduler_for(sampler, DIFFUSION, spacing), default_steps=4, default_eta=eta)
    pipe.set_progress_bar_config(disable=True)
    z, images = ours(unet, vae, cfg)
    z_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent").images
    images_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="pt").images
    assert (z_hf - z).abs().max() <= TOL and z.abs().max() > 1  # not a trivially small sample
    assert (images_hf - images).abs().max() <= TOL


@pytest.mark.parametrize("sampler", ["ddpm", "dpm_solver_pp", "dpm_solver_pp_sde", "heun"])
def test_pipeline_takes_a_grid_of_ones_own_as_our_sampler(sampler):
    """``pipe(timesteps=[...])``: the exported scheduler on a custom grid gives our sampler's latents on the same
    grid (`set_timesteps(timesteps=...)`), not the spaced ones; DDIM's scheduler, which takes no grid, refuses."""
    unet = random_unet()
    hf_unet = LDMPipeUNet(**unet.config).eval()
    hf_unet.unet.load_state_dict(unet.state_dict())
    hf_vae = LDMPipeAutoencoder(kind="kl", **random_vae("kl").config, scaling_factor=SCALE).eval()
    pipe = LDMPipePipeline(hf_unet, hf_vae, scheduler_for(sampler, DIFFUSION, "leading"), default_steps=4, default_eta=0.0)
    pipe.set_progress_bar_config(disable=True)
    grid = [93, 71, 40, 17, 3]
    ours_sampler = make_sampler(sampler, schedule_of(DIFFUSION), prediction=DIFFUSION["prediction"], spacing="leading")
    ours_sampler.set_timesteps(timesteps=grid)
    z = sample_loop(unet, ours_sampler, (len(SEEDS), 4, 8, 8), sample_generators(SEEDS), "cpu", progress=False)
    z_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent", timesteps=grid).images
    assert (z_hf - z).abs().max() <= TOL and z.abs().max() > 1
    spaced = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent").images
    assert (spaced - z).abs().max() > 100 * TOL  # the grid matters
    with pytest.raises(ValueError, match="not both"):
        pipe(batch_size=3, num_inference_steps=4, timesteps=grid, output_type="latent")
    ddim = LDMPipePipeline(hf_unet, hf_vae, scheduler_for("ddim", DIFFUSION, "leading"), default_steps=4, default_eta=0.0)
    with pytest.raises(ValueError, match="DDIMScheduler takes no custom timesteps"):
        ddim(batch_size=3, timesteps=grid, output_type="latent")


def test_exported_folder_loads_offline_and_samples_as_ours(tmp_path, checkpoints):
    """`ldmpipe export` (DDIM, the tiny params' sampler), then DiffusionPipeline.from_pretrained in a fresh
    offline process that imports no ldmpipe: its latents and images equal ours within 1e-4."""
    out = tmp_path / "pipe"
    argv = ["export", "--params", str(TINY), "--diffusion", str(checkpoints["unet"]), "--vae", str(checkpoints["kl"]),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ldmpipe", "LDMPipePipeline"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert (index["default_steps"], index["default_eta"]) == (5, 0.0)  # the tiny params' sample.steps and eta
    assert index["guide_unet"] == [None, None] and not (out / "guide_unet").exists()  # no guide in the checkpoint
    assert json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] == SCALE

    result = tmp_path / "result.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, str(HELPER), str(out), str(result), *map(str, SEEDS)], env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    got = load_file(result)
    assert int(got["ldmpipe_imported"]) == 0
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.autoencoder import load_autoencoder

    unet, _ = load_model(UNet, checkpoints["unet"])
    z, images = ours(unet, load_autoencoder(checkpoints["kl"]), sample_cfg())
    assert (got["latents"] - z).abs().max() <= TOL
    assert (got["images"] - images).abs().max() <= TOL


def test_vq_autoencoder_exports_and_decodes_as_ours(tmp_path, checkpoints):
    out = tmp_path / "pipe"
    export_pipeline(checkpoints["unet"], checkpoints["vq"], out, sample_cfg())
    assert json.loads((out / "model_index.json").read_text())["vae"] == ["diffusers_models", "LDMPipeAutoencoder"]
    for name in ("diffusers_models.py", "models/vae.py", "models/vq.py", "models/layers.py", "runtime.py"):
        assert (out / "vae" / name).read_text() == (ROOT / "src/ldmpipe" / name).read_text()
    hf_vae = LDMPipeAutoencoder.from_pretrained(out / "vae").eval()
    vae = random_vae("vq")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hf_vae.decode(z).sample, vae.decode_latents(z))


def test_export_refuses_and_replaces(tmp_path, checkpoints):
    cfg = sample_cfg()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="not a pipeline folder"):
        export_pipeline(checkpoints["unet"], checkpoints["kl"], precious, cfg)
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    # an earlier export is replaced whole, and nothing is left beside it
    out = tmp_path / "pipe"
    export_pipeline(checkpoints["unet"], checkpoints["kl"], out, cfg)
    (out / "stale.txt").write_text("from an earlier export")
    export_pipeline(checkpoints["unet"], checkpoints["vq"], out, cfg)
    assert not (out / "stale.txt").exists() and (out / "vae" / "models" / "vq.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # latents that do not fit the UNet
    save_model(AutoencoderKL(3, 16, 4, 8), tmp_path / "wide.safetensors")
    with pytest.raises(ArtifactError, match="8 latent channels are not the 4 input channels"):
        export_pipeline(checkpoints["unet"], tmp_path / "wide.safetensors", tmp_path / "other", cfg)
    assert not (tmp_path / "other").exists()
    # autoguidance needs the guide network, which this checkpoint does not hold: refused, naming file and key
    with pytest.raises(ArtifactError, match="unet.safetensors: holds no autoguidance guide .* sample.autoguidance is 1.5"):
        export_pipeline(checkpoints["unet"], checkpoints["kl"], tmp_path / "other", dataclasses.replace(cfg, autoguidance=1.5))
    assert not (tmp_path / "other").exists()


def test_known_differences_are_named():
    """diffusers' DDIM lands on t - T // n (README: "Export to diffusers"), its Heun scales x_T by sigma_max
    at trailing/linspace spacing, and some of its grids visit other timesteps: the export says so, and the
    samples do differ."""
    from ldmpipe.export import differences

    d = DIFFUSION
    assert differences("ddim", d, "leading", 7) is None and differences("ddim", d, "trailing", 4) is None
    assert "t - T // n" in differences("ddim", d, "trailing", 7) and "t - T // n" in differences("ddim", d, "linspace", 4)
    assert "sigma_max" in differences("heun", d, "trailing", 4) and differences("dpm_solver_pp", d, "linspace", 4) is None
    # T = 1000: diffusers' trailing grid rounds n = 48 differently and has one timestep more at n = 61
    big = {**d, "timesteps": 1000}
    assert differences("dpm_solver_pp", big, "trailing", 50) is None
    assert ("DPMSolverMultistepScheduler visits 48 timesteps where ldmpipe's dpm_solver_pp visits 48 (trailing spacing, "
            "n = 48); the first difference, no. 4: 936 against 937") in differences("dpm_solver_pp", big, "trailing", 48)
    assert ("DDPMScheduler visits 62 timesteps where ldmpipe's ddpm visits 61 (trailing spacing, n = 61); the first "
            "difference, no. 62: -1 against none") in differences("ddpm", big, "trailing", 61)
    unet = random_unet()
    hf_unet = LDMPipeUNet(**unet.config).eval()
    hf_unet.unet.load_state_dict(unet.state_dict())
    pipe = LDMPipePipeline(hf_unet, LDMPipeAutoencoder(), scheduler_for("heun", DIFFUSION, "trailing"), default_steps=4)
    pipe.set_progress_bar_config(disable=True)
    z_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent").images
    assert (z_hf - ours(unet, None, sample_cfg("heun", 4, "trailing"))[0]).abs().max() > 0.1


@pytest.mark.parametrize(
    "sampler, zero_snr",  # heun at zero SNR is refused (test_heun_is_not_exported_at_zero_terminal_snr)
    [(s, z) for s in ("ddim", "dpm_solver_pp", "dpm_solver_pp_sde", "ddpm", "heun") for z in (False, True)
     if (s, z) != ("heun", True)],
)
def test_shifted_schedule_is_exported_as_ours(sampler, zero_snr):
    """diffusion.snr_shift goes as trained_betas: diffusers' alpha-bar table is ours, to float32 rounding,
    the shift and the zero-SNR rescale included."""
    d = {**DIFFUSION, "schedule": "cosine", "snr_shift": 0.25, "zero_terminal_snr": zero_snr, "prediction": "v_prediction"}
    theirs = scheduler_for(sampler, d, "trailing").alphas_cumprod.double()
    ours = schedule_of(d).alphas_cumprod
    if sampler.startswith("dpm_solver_pp"):  # diffusers' DPM-Solver reads a zero-SNR end as 2**-24, as our sigmas do
        ours = torch.where(ours == 0, torch.full_like(ours, ZERO_SNR_ABAR), ours)
    assert torch.allclose(theirs, ours, rtol=1e-5, atol=1e-12)
    assert not torch.allclose(ours, schedule_of({**d, "snr_shift": 1.0}).alphas_cumprod, rtol=1e-2)


def test_heun_is_not_exported_at_zero_terminal_snr():
    with pytest.raises(ConfigError, match="sample.sampler heun cannot be exported"):
        scheduler_for("heun", {**DIFFUSION, "zero_terminal_snr": True, "prediction": "v_prediction"}, "trailing")


def test_cli_names_a_missing_checkpoint(tmp_path, capsys):
    argv = ["export", "--params", str(TINY), "--diffusion", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "p")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.safetensors: checkpoint not found" in err[0]
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("scale_shift", [False, True])
def test_class_model_exports_and_guides_as_ours(tmp_path, monkeypatch, scale_shift):
    """A class-conditional UNet (3 classes; its embedding added, or as adaptive GroupNorm) through
    `ldmpipe export` and DiffusionPipeline.from_pretrained: guided DDIM latents (w = 2: one forward over
    the doubled batch) equal ours within 1e-4, for the default classes (row i: class i mod K, as ldmpipe
    sample draws them) and for given labels at w = 1."""
    from diffusers import DiffusionPipeline

    from ldmpipe.diffusion.guidance import GuidedModel, sample_classes

    unet = random_class_unet(0, scale_shift)
    ckpt, vae_path = tmp_path / "unet.safetensors", tmp_path / "kl.safetensors"
    save_model(unet, ckpt, extra={"scale_factor": SCALE, "diffusion": DIFFUSION, "classes": ["a", "b", "c"]})
    save_model(random_vae("kl"), vae_path)
    cfg = SampleConfig(sampler="ddim", steps=5, spacing="leading", eta=0.0, n_samples=3, batch_size=3, grid_size=3,
                       guidance_scale=2.0, autoguidance=1.0, classes=None)  # fmt: skip
    export_pipeline(ckpt, vae_path, tmp_path / "pipe", cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.classes == ["a", "b", "c"] and pipe.config.default_guidance_scale == 2.0

    def ours_guided(labels: torch.Tensor, w: float) -> torch.Tensor:
        sampler = make_sampler("ddim", schedule_of(DIFFUSION), prediction=DIFFUSION["prediction"], spacing="leading")
        sampler.set_timesteps(5)
        model = GuidedModel(unet, labels, unet.null_class, w)
        return sample_loop(model, sampler, (len(SEEDS), 4, 8, 8), sample_generators(SEEDS), "cpu", progress=False)

    default = ours_guided(sample_classes(range(len(SEEDS)), [0, 1, 2]), 2.0)
    z_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent").images
    assert (z_hf - default).abs().max() <= TOL
    labels = torch.tensor([2, 2, 0])
    plain = ours_guided(labels, 1.0)
    z_hf = pipe(batch_size=3, generator=sample_generators(SEEDS), class_labels=labels, guidance_scale=1.0,
                output_type="latent").images  # fmt: skip
    assert (z_hf - plain).abs().max() <= TOL
    assert (plain - default).abs().max() > 100 * TOL  # the labels and the guidance matter
    with pytest.raises(ValueError, match="class_labels must be 3 labels in 0..2"):
        pipe(batch_size=3, class_labels=[0, 1, 3], output_type="latent")


@pytest.mark.parametrize("conditional", [False, True])
def test_autoguided_model_exports_and_guides_as_ours(tmp_path, monkeypatch, capsys, conditional):
    """A checkpoint with an autoguidance guide (train.guide_step) exports it as the pipeline's guide_unet:
    its autoguided DDIM latents equal ours (AutoGuidedModel) within 1e-4, unconditional and, for a class
    model, with classifier-free guidance at w = 2 (both differences added) and at w = 1 (one pass each);
    autoguidance_scale=1 gives the unguided samples; a folder without a guide refuses w_g != 1."""
    from diffusers import DiffusionPipeline

    from ldmpipe.diffusion.guidance import AutoGuidedModel, sample_classes

    net = random_class_unet if conditional else random_unet
    unet, guide = net(0), net(1)
    ckpt, vae_path = tmp_path / "unet.safetensors", tmp_path / "kl.safetensors"
    extra = {"scale_factor": SCALE, "diffusion": DIFFUSION, **({"classes": ["a", "b", "c"]} if conditional else {})}
    save_model(unet, ckpt, extra=extra, guide=guide.state_dict())
    save_model(random_vae("kl"), vae_path)
    w = 2.0 if conditional else 1.0
    cfg = dataclasses.replace(sample_cfg(), guidance_scale=w, autoguidance=1.5)
    index = export_pipeline(ckpt, vae_path, tmp_path / "pipe", cfg)
    assert index["guide_unet"] == ["diffusers_models", "LDMPipeUNet"] and index["default_autoguidance"] == 1.5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    for name, param in guide.state_dict().items():  # the guide's weights, bit for bit
        assert torch.equal(pipe.guide_unet.unet.state_dict()[name], param)
    labels = sample_classes(range(len(SEEDS)), [0, 1, 2]) if conditional else None

    def ours_guided(w_cfg: float, w_g: float) -> torch.Tensor:
        sampler = make_sampler("ddim", schedule_of(DIFFUSION), prediction=DIFFUSION["prediction"], spacing="leading")
        sampler.set_timesteps(5)
        model = AutoGuidedModel(unet, guide, w_g, labels, 3, w_cfg)
        return sample_loop(model, sampler, (len(SEEDS), 4, 8, 8), sample_generators(SEEDS), "cpu", progress=False)

    def theirs(**kwargs) -> torch.Tensor:
        return pipe(batch_size=3, generator=sample_generators(SEEDS), output_type="latent", **kwargs).images

    guided = ours_guided(w, 1.5)
    assert (theirs() - guided).abs().max() <= TOL  # the exported defaults: sample.guidance_scale and autoguidance
    if not conditional:  # the command says that it wrote the guide
        params = yaml.safe_load(TINY.read_text())
        params["train"]["guide_step"], params["sample"]["autoguidance"] = 10, 1.5
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        argv = ["export", "--params", str(tmp_path / "params.yaml"), "--diffusion", str(ckpt), "--vae", str(vae_path),
                "--out", str(tmp_path / "cli")]  # fmt: skip
        assert main(argv) == 0
        assert "autoguidance guide (default autoguidance_scale 1.5)" in capsys.readouterr().out
    unguided = ours_guided(w, 1.0)
    assert (theirs(autoguidance_scale=1.0) - unguided).abs().max() <= TOL
    assert (guided - unguided).abs().max() > 100 * TOL  # the guide matters
    if conditional:
        assert (theirs(guidance_scale=1.0, autoguidance_scale=2.0) - ours_guided(1.0, 2.0)).abs().max() <= TOL
        assert (theirs(guidance_scale=0.0, autoguidance_scale=2.0) - ours_guided(0.0, 2.0)).abs().max() <= TOL
    # exported unguided, from a checkpoint without a guide: no guide_unet, and w_g != 1 is refused
    save_model(unet, ckpt, extra=extra)
    export_pipeline(ckpt, vae_path, tmp_path / "plain", dataclasses.replace(cfg, autoguidance=1.0))
    plain = DiffusionPipeline.from_pretrained(tmp_path / "plain", trust_remote_code=True)
    plain.set_progress_bar_config(disable=True)
    assert plain.guide_unet is None and plain.config.default_autoguidance == 1.0
    with pytest.raises(ValueError, match="autoguidance_scale 1.5 needs the guide network, and this pipeline has none"):
        plain(batch_size=3, autoguidance_scale=1.5, output_type="latent")
    for name in ("guidance_scale", "autoguidance_scale"):  # refused as ldmpipe check refuses them
        with pytest.raises(ValueError, match=f"^{name} must be a non-negative number, got -1$"):
            plain(batch_size=3, output_type="latent", **{name: -1.0})

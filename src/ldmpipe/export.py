"""``ldmpipe export``: a trained latent diffusion model as a folder that ``diffusers`` loads offline.

    DIR/model_index.json        ["pipeline_ldmpipe", "LDMPipePipeline"], default steps, eta and guidance
                                scale; a class model's class names
    DIR/pipeline_ldmpipe.py     the pipeline class (ldmpipe/pipeline_ldmpipe.py, verbatim)
    DIR/unet/                   LDMPipeUNet: config.json, weights, and our code (diffusers_models.py
                                and the modules it imports: models/unet.py, ..., runtime.py)
    DIR/guide_unet/             the autoguidance guide stored in the checkpoint (train.guide_step), as
                                unet/; absent (model_index.json: null) when the checkpoint has none
    DIR/vae/                    a diffusers AutoencoderKL (vae.kind pretrained) or LDMPipeAutoencoder
                                (kl/vq, with the same code); config.scaling_factor = our 1 / std
    DIR/scheduler/              the diffusers scheduler that computes what sample.sampler computes

``DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)`` loads it with only torch and
diffusers installed. The weights are copied bit for bit; the UNet runs our own code, so the only
difference from ``ldmpipe sample`` is the scheduler's arithmetic (float32 tables where ours are float64).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .config import ConfigError, SampleConfig
from .generate import guide_for
from .io import ArtifactError, remove_stale
from .models.autoencoder import KINDS, load_autoencoder
from .models.checkpoint import load_guide, load_model
from .models.pretrained import PretrainedAutoencoderKL, require_diffusers
from .models.unet import UNet

PACKAGE = Path(__file__).parent
WRAPPERS = "diffusers_models"  # the component module: LDMPipeUNet and LDMPipeAutoencoder
# our schedule name -> diffusers' beta_schedule; sigmoid (DDIM/DPM/Heun lack it) and any diffusion.snr_shift
# other than 1 go as trained_betas
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def scheduler_for(sampler: str, diffusion: dict, spacing: str):
    """The diffusers scheduler configured to compute what our ``sampler`` computes on the checkpoint's
    schedule (the pairings of tests/test_diffusion_reference.py, which compares them step by step)."""
    import diffusers

    from .diffusion.schedule import make_betas

    d = diffusion
    zero_snr = bool(d.get("zero_terminal_snr", False))
    common = dict(num_train_timesteps=d["timesteps"], prediction_type=d["prediction"], timestep_spacing=spacing)
    shift = float(d.get("snr_shift", 1.0))
    if d["schedule"] in BETA_SCHEDULES and shift == 1.0:
        common.update(beta_schedule=BETA_SCHEDULES[d["schedule"]], beta_start=d["beta_start"], beta_end=d["beta_end"])
    else:  # diffusers rescales trained betas to zero terminal SNR after the fact, as make_betas does
        betas = make_betas(d["schedule"], d["timesteps"], d["beta_start"], d["beta_end"], snr_shift=shift)
        common.update(trained_betas=betas.tolist())
    if sampler == "heun":
        if zero_snr:
            raise ConfigError("sample.sampler heun cannot be exported for a model trained with diffusion.zero_terminal_snr: "
                              "diffusers' HeunDiscreteScheduler has no zero-SNR option; use ddim or dpm_solver_pp")  # fmt: skip
        return diffusers.HeunDiscreteScheduler(**common)
    common["rescale_betas_zero_snr"] = zero_snr
    if sampler == "ddim":
        return diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    if sampler == "ddpm":
        return diffusers.DDPMScheduler(**common, variance_type="fixed_small", clip_sample=False)
    algorithm = "sde-dpmsolver++" if sampler == "dpm_solver_pp_sde" else "dpmsolver++"
    return diffusers.DPMSolverMultistepScheduler(**common, algorithm_type=algorithm, solver_order=2)


def differences(sampler: str, diffusion: dict, spacing: str, steps: int) -> str | None:
    """Where diffusers' scheduler (`scheduler_for`) does not compute what our sampler does at ``steps``
    (None: it does, to float32 rounding): the timesteps each visits, compared, and the known differences
    in the update rules."""
    from .generate import make_sampler, schedule_of

    theirs = scheduler_for(sampler, diffusion, spacing)
    theirs.set_timesteps(steps)
    ours = make_sampler(sampler, schedule_of(diffusion), prediction=diffusion["prediction"], spacing=spacing)
    ours.set_timesteps(steps)
    a, b = (np.asarray(x, dtype=np.float64) for x in (theirs.timesteps, ours.timesteps))
    notes = []
    if a.shape != b.shape or not np.array_equal(a, b):
        k = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))  # the first that differs
        at = lambda x: f"{x[k]:g}" if k < len(x) else "none"  # noqa: E731
        notes.append(f"diffusers' {type(theirs).__name__} visits {len(a)} timesteps where ldmpipe's {sampler} visits "
                     f"{len(b)} ({spacing} spacing, n = {steps}); the first difference, no. {k + 1}: {at(a)} against {at(b)}")  # fmt: skip
    T = diffusion["timesteps"]
    if sampler == "ddim" and (spacing == "linspace" or (spacing == "trailing" and T % steps)):
        notes.append(f"diffusers' DDIM steps from t to t - T // n, not to the next of its {spacing} timesteps "
                     f"(T = {T}, n = {steps})")  # fmt: skip
    if sampler == "heun" and spacing != "leading":
        notes.append(f"diffusers' Heun starts from x_T * sigma_max at {spacing} spacing, ldmpipe's from "
                     "x_T * sqrt(sigma_max^2 + 1): the same only where sigma_max >> 1")  # fmt: skip
    return "; ".join(notes) + ": its samples differ from ldmpipe's" if notes else None


def code_files() -> list[str]:
    """diffusers_models.py and the modules it imports relatively (paths under ldmpipe/), found as
    diffusers finds them when it copies a component's code."""
    from diffusers.utils.dynamic_modules_utils import get_relative_imports

    wrapper = PACKAGE / f"{WRAPPERS}.py"
    return [wrapper.name, *sorted(m.replace(".", "/") + ".py" for m in get_relative_imports(str(wrapper)))]


def _copy_code(folder: Path) -> None:
    for name in code_files():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE / name, folder / name)


def _write_unet(folder: Path, unet: UNet) -> None:
    from .diffusers_models import LDMPipeUNet

    hf_unet = LDMPipeUNet(**unet.config)
    hf_unet.unet.load_state_dict(unet.state_dict(), strict=True)
    hf_unet.save_pretrained(folder)
    _copy_code(folder)


def _write_components(tmp: Path, unet: UNet, guide: UNet | None, vae, scale: float, scheduler) -> dict[str, list]:
    """unet/, guide_unet/ (when there is a guide), vae/ and scheduler/ under ``tmp``; returns their
    model_index.json entries."""
    from .diffusers_models import LDMPipeAutoencoder

    _write_unet(tmp / "unet", unet)
    if guide is not None:
        _write_unet(tmp / "guide_unet", guide)
    if isinstance(vae, PretrainedAutoencoderKL):  # a stock diffusers model, with our scale
        vae.vae.register_to_config(scaling_factor=scale, shift_factor=None)
        vae.vae.save_pretrained(tmp / "vae")
        vae_entry = ["diffusers", "AutoencoderKL"]
    else:
        hf_vae = LDMPipeAutoencoder(kind=KINDS[type(vae)], **vae.config, scaling_factor=scale)
        hf_vae.autoencoder.load_state_dict(vae.state_dict(), strict=True)
        hf_vae.save_pretrained(tmp / "vae")
        _copy_code(tmp / "vae")
        vae_entry = [WRAPPERS, "LDMPipeAutoencoder"]
    scheduler.save_pretrained(tmp / "scheduler")
    return {"unet": [WRAPPERS, "LDMPipeUNet"], "vae": vae_entry, "scheduler": ["diffusers", type(scheduler).__name__],
            "guide_unet": [None, None] if guide is None else [WRAPPERS, "LDMPipeUNet"]}  # fmt: skip


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an existing ``out`` must be an earlier export (or empty)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "model_index.json").is_file()):
            raise ArtifactError(f"{out}: exists and is not a pipeline folder (no model_index.json); not replacing it")
        old = out.parent / f".{out.name}.old{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out)


def export_pipeline(diffusion: str | Path, vae_path: str | Path, out: str | Path, sample: SampleConfig) -> dict:
    """Write the pipeline folder ``out`` (atomically: built beside it, then renamed) from a UNet
    checkpoint and an autoencoder checkpoint; ``sample`` gives the scheduler, its spacing and the
    pipeline's default steps, eta and guidance scales. A checkpoint that holds an autoguidance guide
    exports it too (the pipeline's ``guide_unet``), whatever ``sample.autoguidance``; one without a guide
    is refused when ``sample.autoguidance`` != 1. Returns the model_index.json contents, with a ``note``
    where the exported scheduler does not compute what ``sample.sampler`` computes (see ``differences``)."""
    diffusers = require_diffusers("ldmpipe export")
    unet, extra = load_model(UNet, diffusion)
    # the stored guide, if any; guide_for refuses a checkpoint without one when sample.autoguidance != 1
    guide = load_guide(UNet, diffusion) if sample.autoguidance == 1.0 else guide_for(diffusion, sample.autoguidance, "cpu")
    vae = load_autoencoder(vae_path)
    latent = vae.config["diffusers_config"] if isinstance(vae, PretrainedAutoencoderKL) else vae.config
    if latent["latent_channels"] != unet.config["in_channels"]:
        raise ArtifactError(f"{vae_path}: its {latent['latent_channels']} latent channels are not the "
                            f"{unet.config['in_channels']} input channels of {diffusion}")  # fmt: skip
    scheduler = scheduler_for(sample.sampler, extra["diffusion"], sample.spacing)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out.parent, f".{out.name}.tmp")
    remove_stale(out.parent, f".{out.name}.old")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        index = {"_class_name": ["pipeline_ldmpipe", "LDMPipePipeline"], "_diffusers_version": diffusers.__version__,
                 **_write_components(tmp, unet, guide, vae, float(extra["scale_factor"]), scheduler),
                 "default_steps": sample.steps, "default_eta": sample.eta,
                 "default_guidance_scale": sample.guidance_scale, "default_autoguidance": sample.autoguidance,
                 "classes": extra.get("classes")}  # fmt: skip
        shutil.copyfile(Path(__file__).with_name("pipeline_ldmpipe.py"), tmp / "pipeline_ldmpipe.py")
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**index, "note": differences(sample.sampler, extra["diffusion"], sample.spacing, sample.steps)}

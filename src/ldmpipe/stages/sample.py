"""Stage ``sample``: the chosen sampler on the EMA UNet, decoded by the autoencoder.

Sample i starts from its own seed (derived from ``seed`` and i), so its noise does not depend on
the batch size or on how many samples are drawn (its pixels only up to float rounding: `generate`).  A class-conditional model draws sample i from class
``sample.classes[i mod len]`` (all classes by default) with classifier-free guidance at
``sample.guidance_scale``; the labels are saved with the images, and the grid has one row per class.
``sample.autoguidance`` w_g != 1 also guides either kind by the guide stored with the weights
(``train.guide_step``; Karras et al. 2024).
The trajectory figure replays the first samples' reverse process and shows x_t and the predicted x̂0
at about 8 evenly spaced evaluations.
"""

from __future__ import annotations

import argparse

from .. import runtime
from ..config import ConfigError, Params
from ..generate import class_labels, generate, guide_for, make_sampler, nfe, schedule_of, trajectory
from ..io import save_arrays, save_image
from ..models.autoencoder import load_autoencoder
from ..models.checkpoint import load_model
from ..models.unet import UNet
from ..plotting import sample_grid, trajectory_figure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diffusion", required=True, help="input: EMA UNet weights")
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--samples", required=True, help="output: generated images, uint8 (.safetensors)")
    p.add_argument("--grid", required=True, help="output: grid of the first samples (.png)")
    p.add_argument("--trajectory", required=True, help="output: x_t and predicted x0 along the first samples' reverse process (.png)")


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.sample
    device = runtime.setup(params.device)
    unet, extra = load_model(UNet, args.diffusion, device)
    guide, w_g = guide_for(args.diffusion, cfg.autoguidance, device), cfg.autoguidance
    vae = load_autoencoder(args.vae, device)
    d = extra["diffusion"]
    schedule = schedule_of(d)
    if cfg.steps > schedule.num_timesteps:
        raise ConfigError(f"sample.steps must be at most the model's {schedule.num_timesteps} timesteps ({args.diffusion}), got {cfg.steps}")
    sampler = make_sampler(cfg.sampler, schedule, prediction=d["prediction"], spacing=cfg.spacing, eta=cfg.eta)
    labels = class_labels(unet, cfg.classes, cfg.n_samples)  # (N,) for a class model, else None
    w = cfg.guidance_scale
    guided = f", classes {sorted(set(labels.tolist()))}, guidance scale {w:g}" if labels is not None else ""
    guided += f", autoguidance {w_g:g} (guide: step {extra.get('guide_step')})" if guide is not None else ""
    print(f"sample: {cfg.n_samples} images with {cfg.sampler} ({cfg.steps} steps, {cfg.spacing} spacing{guided})")
    images = generate(unet, vae, extra["scale_factor"], sampler, cfg.steps, cfg.n_samples, cfg.batch_size,
                      params.seed, device, progress="sample", labels=labels, guidance_scale=w, guide=guide, autoguidance=w_g)  # fmt: skip
    arrays, meta = {"images": images}, {"sampler": cfg.sampler, "steps": cfg.steps}
    if labels is not None:  # a class model: each sample's class, the class names and the guidance beside them
        arrays["labels"] = labels.numpy()
        meta.update(guidance_scale=w, nfe=nfe(sampler, unet, w, w_g), classes=extra["classes"])
    if guide is not None:  # autoguided: its scale, the guide's step and the honest NFE
        meta.update(autoguidance=w_g, guide_step=extra.get("guide_step"), nfe=nfe(sampler, unet, w, w_g))
    save_arrays(args.samples, arrays, meta)
    save_image(args.grid, sample_grid(images, arrays.get("labels"), cfg.grid_size))
    columns, x_t, x0 = trajectory(unet, vae, extra["scale_factor"], sampler, cfg.steps, params.seed, device=device,
                                  labels=labels, guidance_scale=w, guide=guide, autoguidance=w_g)  # fmt: skip
    title = f"{cfg.sampler}, {cfg.steps} {cfg.spacing} steps: x_t (upper) and predicted x0 (lower) of samples 0-{len(x_t) - 1}"
    save_image(args.trajectory, trajectory_figure(columns, sampler.nfe, x_t, x0, title))

"""Stage ``sample``: the chosen sampler on the EMA UNet, decoded by the autoencoder.

Sample i starts from its own seed (derived from ``seed`` and i), so it does not depend on the
batch size or on how many samples are drawn. The trajectory figure replays the first samples'
reverse process and shows x_t and the predicted x̂0 at about 8 evenly spaced evaluations.
"""

from __future__ import annotations

import argparse

from .. import runtime
from ..config import ConfigError, Params
from ..generate import generate, make_sampler, schedule_of, trajectory
from ..io import save_arrays, save_image
from ..models.autoencoder import load_autoencoder
from ..models.checkpoint import load_model
from ..models.unet import UNet
from ..plotting import image_grid, trajectory_figure


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
    vae = load_autoencoder(args.vae, device)
    d = extra["diffusion"]
    schedule = schedule_of(d)
    if cfg.steps > schedule.num_timesteps:
        raise ConfigError(f"sample.steps must be at most the model's {schedule.num_timesteps} timesteps")
    sampler = make_sampler(cfg.sampler, schedule, prediction=d["prediction"], spacing=cfg.spacing, eta=cfg.eta)
    print(f"sample: {cfg.n_samples} images with {cfg.sampler} ({cfg.steps} steps, {cfg.spacing} spacing)")
    images = generate(unet, vae, extra["scale_factor"], sampler, cfg.steps, cfg.n_samples, cfg.batch_size,
                      params.seed, device)  # fmt: skip
    save_arrays(args.samples, {"images": images}, {"sampler": cfg.sampler, "steps": cfg.steps})
    save_image(args.grid, image_grid(images[: cfg.grid_size]))
    columns, x_t, x0 = trajectory(unet, vae, extra["scale_factor"], sampler, cfg.steps, params.seed, device=device)
    title = f"{cfg.sampler}, {cfg.steps} {cfg.spacing} steps: x_t (upper) and predicted x0 (lower) of samples 0-{len(x_t) - 1}"
    save_image(args.trajectory, trajectory_figure(columns, sampler.nfe, x_t, x0, title))

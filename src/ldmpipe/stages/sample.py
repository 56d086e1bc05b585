"""Stage ``sample``: DDPM or DDIM on the EMA UNet, decoded by the autoencoder.

Sample i starts from its own seed (derived from ``seed`` and i), so it does not depend on the
batch size or on how many samples are drawn.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import runtime
from ..config import Params
from ..diffusion import SAMPLERS, NoiseSchedule, sample_generators, sample_loop
from ..io import save_arrays, save_image
from ..images import to_uint8
from ..models.checkpoint import load_model
from ..models.unet import UNet
from ..models.vae import AutoencoderKL
from ..plotting import image_grid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diffusion", required=True, help="input: EMA UNet weights")
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--samples", required=True, help="output: generated images, uint8 (.safetensors)")
    p.add_argument("--grid", required=True, help="output: grid of the first samples (.png)")


def make_sampler(name: str, schedule: NoiseSchedule, eta: float):
    return SAMPLERS[name](schedule, eta=eta) if name == "ddim" else SAMPLERS[name](schedule)


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.sample
    device = runtime.setup(params.device)
    unet, extra = load_model(UNet, args.diffusion, device)
    vae, _ = load_model(AutoencoderKL, args.vae, device)
    d = extra["diffusion"]
    schedule = NoiseSchedule.from_config(d["schedule"], d["timesteps"], d["beta_start"], d["beta_end"])
    if cfg.steps > schedule.num_timesteps:
        raise ValueError(f"sample.steps must be at most the model's {schedule.num_timesteps} timesteps")
    sampler = make_sampler(cfg.sampler, schedule, cfg.eta)
    shape = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    images = []
    for start in range(0, cfg.n_samples, cfg.batch_size):
        idx = range(start, min(start + cfg.batch_size, cfg.n_samples))
        gens = sample_generators([runtime.stage_seed(params.seed, f"sample/{i}") for i in idx])
        sampler.set_timesteps(cfg.steps)
        print(f"sample: images {idx.start}-{idx.stop - 1} of {cfg.n_samples} ({cfg.sampler}, {cfg.steps} steps)")
        z = sample_loop(unet, sampler, (len(idx), *shape), gens, device)  # (B, z, h, w), scaled latents
        with torch.no_grad():
            images.append(to_uint8(vae.decode(z.to(device) / extra["scale_factor"])))
    images = np.concatenate(images)  # (N, H, W, C) uint8
    save_arrays(args.samples, {"images": images}, {"sampler": cfg.sampler, "steps": cfg.steps})
    save_image(args.grid, image_grid(images[: cfg.grid_size]))

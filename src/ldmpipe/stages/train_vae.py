"""Stage ``train_vae``: train the KL autoencoder; write weights, validation MSE/PSNR and a grid."""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from .. import runtime
from ..config import Params, to_dict
from ..io import load_arrays, save_image
from ..images import map_batches, to_model_input, to_uint8
from ..models.checkpoint import save_model
from ..models.vae import AutoencoderKL
from ..plotting import pair_grid
from ..tracking import live_logger, log_step
from ..training import TrainSettings, batch_indices, checkpointing, train_loop


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="input: train arrays")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--model", required=True, help="output: autoencoder weights (.safetensors)")
    p.add_argument("--live", required=True, help="output: DVCLive folder (loss curve; metrics.json with val MSE/PSNR)")
    p.add_argument("--grid", required=True, help="output: originals above reconstructions (.png)")


def reconstruct(vae: AutoencoderKL, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Decode the posterior mean of each image: uint8 (N, H, W, C) -> uint8 (N, H, W, C)."""
    return map_batches(lambda x: to_uint8(vae.decode(vae.encode(x).mean)), images, batch_size, device)


def recon_metrics(originals: np.ndarray, recons: np.ndarray) -> dict[str, float]:
    """MSE on [0, 1] pixels and PSNR = 10 log10(1 / MSE), over the whole split."""
    mse = float(np.mean((originals.astype(np.float64) / 255 - recons.astype(np.float64) / 255) ** 2))
    return {"val_mse": mse, "val_psnr": 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")}


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.vae
    device = runtime.setup(params.device)
    train, _ = load_arrays(args.train)
    val, _ = load_arrays(args.val)
    images = torch.from_numpy(train["images"])  # (N, H, W, C) uint8, stays on CPU
    torch.manual_seed(runtime.stage_seed(params.seed, "train_vae.init"))
    vae = AutoencoderKL(images.shape[-1], cfg.channels, cfg.downsample, cfg.latent_channels).to(device)
    gen = runtime.generator(params.seed, "train_vae.batches")
    batches = batch_indices(len(images), cfg.batch_size, gen)
    latent_shape = (cfg.latent_channels, images.shape[1] // cfg.downsample, images.shape[2] // cfg.downsample)

    def loss_fn(step: int):
        x = to_model_input(images[next(batches)].numpy(), device)
        noise = torch.randn((len(x), *latent_shape), generator=gen).to(device)
        return vae.loss(x, noise, cfg.kl_weight)

    settings = TrainSettings(steps=cfg.steps, lr=cfg.lr, warmup_steps=min(100, cfg.steps // 10), grad_clip=1.0,
                             log_every=max(1, cfg.steps // 100))  # fmt: skip
    ckpt = checkpointing("train_vae", params.train.checkpoint_every, {"seed": params.seed, "vae": to_dict(cfg)}, [args.train])
    with live_logger(args.live) as live:
        train_loop(vae, loss_fn, settings, log=lambda s, m: log_step(live, s, m), desc="train_vae",
                   checkpointing=ckpt, extra_state={"generator": gen, "batches": batches})  # fmt: skip
        recons = reconstruct(vae, val["images"], device)
        metrics = recon_metrics(val["images"], recons)
        for k, v in metrics.items():
            live.summary[k] = v
    save_model(vae, args.model)
    save_image(args.grid, pair_grid(val["images"][:32], recons[:32]))
    ckpt.discard()
    print(f"train_vae: val MSE {metrics['val_mse']:.5f}, PSNR {metrics['val_psnr']:.2f} dB")

"""Stage ``train_vae``: train the autoencoder (``vae.kind``: kl or vq), optionally against a PatchGAN
discriminator; write weights, validation MSE/PSNR and a grid of reconstructions.

``vae.kind: pretrained`` trains nothing: the stage copies the diffusers AutoencoderKL of ``vae.pretrained``
into the same checkpoint format and measures it the same way (see ``copy_pretrained``)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from .. import distributed, runtime
from ..autoencoder_metrics import recon_metrics, reconstruct
from ..config import ConfigError, Params, VAEConfig, to_dict
from ..io import load_arrays, save_image
from ..images import tensor_to_model_input
from ..models.autoencoder import build_autoencoder
from ..models.checkpoint import save_model
from ..models.discriminator import PatchDiscriminator
from ..models.pretrained import WEIGHTS, load_pretrained
from ..plotting import pair_grid
from ..tracking import live_logger, log_step
from ..training import TrainSettings, batch_indices, checkpointing, train_loop
from ..training.autoencoder import Adversary, TrainingForward, autoencoder_loss


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="input: train arrays")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--model", required=True, help="output: autoencoder weights (.safetensors)")
    p.add_argument("--live", required=True, help="output: DVCLive folder (loss curve; metrics.json with val MSE/PSNR)")
    p.add_argument("--grid", required=True, help="output: originals above reconstructions (.png)")


def vq_settings(cfg: VAEConfig) -> dict:
    """The quantiser's constructor keywords (none for kl)."""
    if cfg.kind != "vq":
        return {}
    return dict(codebook_size=cfg.codebook_size, beta=cfg.beta, ema=cfg.codebook_ema, decay=cfg.codebook_decay,
                dead_threshold=cfg.dead_code_threshold)  # fmt: skip


def copy_pretrained(args: argparse.Namespace, params: Params) -> None:
    """vae.kind pretrained: the checked folder's AutoencoderKL (float32) becomes --model, with the source
    file's SHA-256 in its metadata; validation MSE/PSNR and the grid as for a trained one. The loss curve
    holds its header only (no training steps); the summary has no loss."""
    cfg = params.vae
    device = runtime.setup(params.device)
    val, _ = load_arrays(args.val)
    vae = load_pretrained(cfg.pretrained, cfg.downsample, cfg.latent_channels).to(device)
    dc, channels = vae.config["diffusers_config"], val["images"].shape[-1]
    if (dc["in_channels"], dc["out_channels"]) != (channels, channels):
        raise ConfigError(f"vae.pretrained '{cfg.pretrained}' maps {dc['in_channels']}-channel images to "
                          f"{dc['out_channels']}-channel ones, but the data has {channels} channels")  # fmt: skip
    with live_logger(args.live) as live:
        recons = reconstruct(vae, val["images"], device)
        metrics = recon_metrics(val["images"], recons)
        for k, v in metrics.items():
            live.summary[k] = v
        curve = Path(live.plots_dir) / "metrics" / "loss.tsv"
        curve.parent.mkdir(parents=True, exist_ok=True)
        curve.write_text("step\tloss\n", encoding="utf-8")
    digest = hashlib.sha256((Path(cfg.pretrained) / WEIGHTS).read_bytes()).hexdigest()
    save_model(vae, args.model, extra={"pretrained": cfg.pretrained, "sha256": digest})
    save_image(args.grid, pair_grid(val["images"][:32], recons[:32]))
    print(f"train_vae (pretrained): copied {cfg.pretrained} (AutoencoderKL, f={cfg.downsample}, {cfg.latent_channels} "
          f"latent channels; {WEIGHTS} sha256 {digest[:12]}); val MSE {metrics['val_mse']:.5f}, "
          f"PSNR {metrics['val_psnr']:.2f} dB")  # fmt: skip


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.vae
    if cfg.kind == "pretrained":
        return copy_pretrained(args, params)
    device = runtime.setup(params.device)
    shard = distributed.init(device, params.train.nproc)  # one process, or this rank of torchrun's (train.nproc)
    train, _ = load_arrays(args.train)
    val, _ = load_arrays(args.val)
    images = runtime.resident(torch.from_numpy(train["images"]), device)  # (N, H, W, C) uint8
    torch.manual_seed(runtime.stage_seed(params.seed, "train_vae.init"))
    vae = build_autoencoder(cfg.kind, images.shape[-1], cfg.channels, cfg.downsample, cfg.latent_channels,
                            **vq_settings(cfg)).to(device)  # fmt: skip
    # the adversary (off when disc_weight is 0): a PatchGAN with its own optimiser, stepped inside the loss
    adversary = None
    if cfg.disc_weight > 0:
        torch.manual_seed(runtime.stage_seed(params.seed, "train_vae.disc_init"))
        disc = PatchDiscriminator(images.shape[-1], channels=4 * cfg.channels).to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
        adversary = Adversary(disc, disc_opt, cfg.disc_weight, cfg.disc_start)
    reg_weight = cfg.kl_weight if cfg.kind == "kl" else 1.0  # the VQ loss carries its own beta
    gen = runtime.generator(params.seed, "train_vae.batches")
    batches = batch_indices(len(images), cfg.batch_size, gen)  # global batches: the same on every rank
    forward = distributed.wrap(TrainingForward(vae), shard)

    def loss_fn(step: int):
        idx = shard.take(next(batches))  # this rank's slice of the global batch
        x = tensor_to_model_input(runtime.to_device(images[runtime.to_device(idx, images.device)], device))
        return autoencoder_loss(vae, x, gen, reg_weight, step, adversary, shard, forward)

    settings = TrainSettings(steps=cfg.steps, lr=cfg.lr, warmup_steps=min(100, cfg.steps // 10), grad_clip=1.0,
                             log_every=max(1, cfg.steps // 100))  # fmt: skip
    config = {"seed": params.seed, "vae": to_dict(cfg), "nproc": params.train.nproc}
    ckpt = checkpointing("train_vae", params.train.checkpoint_every, config, [args.train])
    state = {"generator": gen, "batches": batches}
    if adversary is not None:
        state.update(discriminator=adversary.disc, disc_optimizer=adversary.opt)
    with live_logger(args.live, enabled=shard.main) as live:
        train_loop(vae, loss_fn, settings, log=lambda s, m: log_step(live, s, m), desc="train_vae",
                   checkpointing=ckpt, extra_state=state, shard=shard)  # fmt: skip
        if shard.main:  # only rank 0 evaluates and writes; the others wait for it
            recons = reconstruct(vae, val["images"], device)
            metrics = recon_metrics(val["images"], recons)
            for k, v in metrics.items():
                live.summary[k] = v
    if shard.main:
        save_model(vae, args.model)
        save_image(args.grid, pair_grid(val["images"][:32], recons[:32]))
        ckpt.discard()
        print(f"train_vae ({cfg.kind}): val MSE {metrics['val_mse']:.5f}, PSNR {metrics['val_psnr']:.2f} dB")
    distributed.barrier(shard)

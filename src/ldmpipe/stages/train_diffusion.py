"""Stage ``train_diffusion``: a UNet on scaled latents, predicting ε, x0 or v.

DDPM forward process and simple loss (Ho et al. 2020, eq. 4 and 14; v: Salimans & Ho 2022),
optionally Min-SNR-γ weighted
(Hang et al. 2023), AdamW with linear warm-up,
gradient clipping, EMA weights; the EMA weights are the stage's output, stored with the noise
schedule and the latent scale factor so that sampling needs nothing else.

``diffusion.conditioning: class`` trains a class-conditional UNet for classifier-free guidance (Ho &
Salimans 2022): each batch's labels go to the null class with probability ``diffusion.cond_drop``, and
the class names are stored with the weights.

``train.guide_step`` N keeps the EMA weights after step N and stores them beside the final ones: the
guide of autoguidance (Karras et al. 2024), the weights a run of N steps would end with, at no cost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .. import distributed, runtime
from ..config import ConfigError, Params, UNetConfig, to_dict
from ..diffusion.diagnostics import COLUMNS, probe_timesteps, timestep_errors
from ..diffusion.guidance import drop_labels
from ..diffusion.loss import diffusion_loss
from ..diffusion.schedule import NoiseSchedule
from ..io import ArtifactError, load_arrays, save_figure, write_text
from ..models.checkpoint import save_model
from ..models.unet import UNet
from ..plotting import timestep_error_figure
from ..tracking import live_logger, log_step
from ..training import TrainSettings, batch_indices, checkpointing, train_loop


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latents", required=True, help="input: train latents with their scale factor")
    p.add_argument("--meta", help="input: dataset meta (.json), for the class names (diffusion.conditioning: class)")
    p.add_argument("--model", required=True, help="output: EMA weights of the UNet (.safetensors)")
    p.add_argument("--live", required=True, help="output: DVCLive folder (loss curve, summary)")
    p.add_argument("--val-latents", required=True, help="input: validation latents, for the per-timestep error")
    p.add_argument("--timestep-error", required=True, help="output: per-timestep error of the EMA model (.tsv)")
    p.add_argument("--timestep-figure", required=True, help="output: the per-timestep error, plotted (.png)")


def run(args: argparse.Namespace, params: Params) -> None:
    cfg, d = params.train, params.diffusion
    device = runtime.setup(params.device)
    shard = distributed.init(device, params.train.nproc)  # one process, or this rank of torchrun's (train.nproc)
    arrays, meta = load_arrays(args.latents)
    scale = float(meta["scale_factor"])
    data = torch.from_numpy(arrays["latents"]).float().mul_(scale).to(device)  # (N, z, h, w), unit std
    if d.conditioning == "class" and args.meta is None:
        raise ConfigError("diffusion.conditioning is class: train-diffusion needs --meta (the dataset's meta.json, "
                          "for the class names)")  # fmt: skip
    classes = class_names(args.meta) if d.conditioning == "class" else []
    labels = torch.from_numpy(arrays["labels"]).long().to(device)  # (N,)
    torch.manual_seed(runtime.stage_seed(params.seed, "train_diffusion.init"))
    u = params.unet
    unet = build_unet(u, data.shape[1], data.shape[2], num_classes=len(classes)).to(device)
    schedule = NoiseSchedule.from_params(to_dict(d))
    gamma = d.min_snr_gamma if d.loss_weighting == "min_snr" else None
    gen = runtime.generator(params.seed, "train_diffusion.batches")
    batches = batch_indices(len(data), cfg.batch_size, gen)  # global batches: the same on every rank
    net = distributed.wrap(unet, shard)

    def loss_fn(step: int):
        idx = next(batches)  # global batch indices (B,)
        x0, model = data[runtime.to_device(shard.take(idx), device)], net  # this rank's slice (B / N, z, h, w)
        if classes:  # labels (B / N,): the global batch's, each dropped to the null class with probability
            # cond_drop (one uniform per global row, drawn before t and eps), then this rank's slice
            y = shard.take(drop_labels(labels[runtime.to_device(idx, device)], d.cond_drop, unet.null_class, gen))
            model = lambda x, t: net(x, t, y)  # noqa: E731
        with runtime.autocast(device, cfg.bf16):
            loss = diffusion_loss(model, schedule, x0, gen, prediction=d.prediction, min_snr_gamma=gamma, shard=shard,
                                  timestep_sampling=d.timestep_sampling)
        return loss, {"loss": loss.detach()}

    settings = TrainSettings(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                             grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, log_every=cfg.log_every,
                             ema_snapshot_step=cfg.guide_step)  # fmt: skip
    n_params = sum(p.numel() for p in unet.parameters())
    what = f", conditional on {len(classes)} classes (label dropout {d.cond_drop:g})" if classes else ""
    if shard.main:
        print(f"train_diffusion: UNet with {n_params / 1e6:.2f}M parameters on latents {tuple(data.shape[1:])}{what}, "
              f"{device}" + (f" x {shard.world} processes" if shard.world > 1 else ""))  # fmt: skip
    config = {"seed": params.seed, "diffusion": to_dict(d), "unet": to_dict(u), "train": to_dict(cfg)}
    ckpt = checkpointing("train_diffusion", cfg.checkpoint_every, config, [args.latents])
    with live_logger(args.live, enabled=shard.main) as live:
        ema = train_loop(unet, loss_fn, settings, log=lambda s, m: log_step(live, s, m), desc="train_diffusion",
                         checkpointing=ckpt, extra_state={"generator": gen, "batches": batches}, shard=shard)  # fmt: skip
        live.summary["parameters"] = n_params
        if shard.main:  # only rank 0 evaluates and writes; the others wait for it
            # Is the EMA model sound at every noise level? x0/target MSE on held-out latents at >= 12 timesteps
            rows = timestep_report(ema.model.eval(), schedule, d.prediction, args.val_latents, scale, params.seed, device,
                                   conditional=bool(classes))  # fmt: skip
            live.summary["x0_mse_last_t"] = rows[-1]["x0_mse"]  # at t = T-1, where trailing/DDPM sampling starts
            live.summary["x0_mse_max"] = max(r["x0_mse"] for r in rows)
    if shard.main:
        write_text(args.timestep_error, "\t".join(COLUMNS) + "\n" + "".join(
            "\t".join(f"{r[c]:.6g}" for c in COLUMNS) + "\n" for r in rows))  # fmt: skip
        save_figure(args.timestep_figure, timestep_error_figure(rows, d.prediction))
        save_model(ema.model, args.model, extra=checkpoint_extra(d, scale, classes, cfg.guide_step), guide=ema.snapshot)
        ckpt.discard()
    distributed.barrier(shard)


def build_unet(u: UNetConfig, in_channels: int, sample_size: int, num_classes: int = 0) -> UNet:
    """The UNet that the ``unet`` params describe, for latents (in_channels, sample_size, sample_size)."""
    return UNet(in_channels, sample_size, u.channels, u.channel_mult, u.num_res_blocks, u.attention_resolutions,
                u.dropout, num_classes=num_classes, scale_shift=u.scale_shift)  # fmt: skip


def class_names(meta: str) -> list[str]:
    """The dataset's class names, in label order, from prepare's meta file."""
    try:
        return list(json.loads(Path(meta).read_text(encoding="utf-8"))["classes"])
    except FileNotFoundError:
        raise ArtifactError(f"{meta}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ArtifactError(f"{meta}: not a dataset meta file (.json with a 'classes' list)") from None


def checkpoint_extra(d, scale: float, classes: list[str], guide_step: int | None = None) -> dict:
    """What sampling needs beside the weights: the scale factor, the diffusion params, for a class
    model the class names, and the step of the autoguidance guide if one is stored. An unconditional model's extras leave out the conditioning keys, an
    unshifted schedule its ``snr_shift`` and uniform timestep sampling its ``timestep_sampling``, so such
    a checkpoint is byte for byte what it was before they existed (readers take a missing ``snr_shift``
    as 1; sampling never reads ``timestep_sampling``, which is kept only as a record of training)."""
    diffusion = to_dict(d)
    if not classes:
        del diffusion["conditioning"], diffusion["cond_drop"]
    if diffusion["snr_shift"] == 1.0:
        del diffusion["snr_shift"]
    if diffusion["timestep_sampling"] == "uniform":
        del diffusion["timestep_sampling"]
    guide = {} if guide_step is None else {"guide_step": guide_step}
    return {"scale_factor": scale, "diffusion": diffusion, **({"classes": classes} if classes else {}), **guide}


def timestep_report(model, schedule, prediction, val_path, scale, seed, device, conditional: bool = False) -> list[dict[str, float]]:
    """`timestep_errors` of ``model`` on the scaled validation latents (a class model: given their true
    labels), printed where it matters."""
    arrays = load_arrays(val_path)[0]
    x0 = torch.from_numpy(arrays["latents"]).float().mul_(scale).to(device)  # (N, z, h, w)
    labels = torch.from_numpy(arrays["labels"]).long().to(device) if conditional else None  # (N,)
    ts = probe_timesteps(schedule.num_timesteps)
    gen = runtime.generator(seed, "train_diffusion.timestep_error")
    rows = timestep_errors(model, schedule, x0, prediction, ts, gen, labels=labels)
    worst = ", ".join(f"t={r['t']}: {r['x0_mse']:.3g}" for r in rows[-3:])
    print(f"train_diffusion: x0-MSE of the EMA model on {len(x0)} validation latents at high noise: {worst}")
    return rows

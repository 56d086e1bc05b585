"""Stage ``encode``: images -> latents (KL: posterior means; VQ: pre-quantisation), once; scale factor 1/std.

Latent diffusion's scale-by-std (Rombach et al. 2022, sec. 4.3.2 / appendix G): the diffusion
model sees ``scale_factor * z`` with ``scale_factor = 1 / std(z_train)``, so its inputs have unit
variance whatever the autoencoder's latent scale.  The factor is stored with the latents; the
metrics hold per-channel statistics before and after scaling and whether the scaled training
latents, as the diffusion stage will see them (float32), have unit std within 5%.

A pretrained diffusers VAE (``vae.kind: pretrained``) is scaled the same way: its own ``scaling_factor``
(0.18215 for Stable Diffusion's) was measured on its training images, not on ours; it is reported as
``pretrained_scaling_factor`` beside ours.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import runtime
from ..config import Params
from ..io import load_arrays, save_arrays, write_json
from ..images import map_batches
from ..models.autoencoder import Autoencoder, load_autoencoder
from ..models.pretrained import PretrainedAutoencoderKL

UNIT_STD_TOLERANCE = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--train", required=True, help="input: train arrays")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--train-out", required=True, help="output: train latents (.safetensors)")
    p.add_argument("--val-out", required=True, help="output: validation latents (.safetensors)")
    p.add_argument("--metrics", required=True, help="output: latent statistics (.json)")


def encode_latents(vae: Autoencoder, images: np.ndarray, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """uint8 images (N, H, W, C) -> float32 latents (N, z, H/f, W/f)."""
    return map_batches(lambda x: vae.encode_latents(x).float().cpu().numpy(), images, batch_size, device)


def scale_factor(z: np.ndarray) -> float:
    """1 / std of latents (N, z, h, w) over all entries, in float64."""
    return 1.0 / float(z.astype(np.float64).std())


def latent_statistics(z: np.ndarray, scale: float) -> dict:
    """Per-channel mean/std of latents (N, z, h, w) before and after scaling, and the unit-std check.

    The scaled latents are computed as ``train_diffusion`` does (float32 latents times the factor).
    """
    z64 = z.astype(np.float64)
    scaled = (z.astype(np.float32) * np.float32(scale)).astype(np.float64)
    std = float(scaled.std())
    return {
        "scale_factor": scale,
        "latent_std": float(z64.std()),
        "latent_mean": float(z64.mean()),
        "latent_shape": list(z.shape[1:]),
        "channel_mean": z64.mean(axis=(0, 2, 3)).tolist(),
        "channel_std": z64.std(axis=(0, 2, 3)).tolist(),
        "scaled_std": std,
        "scaled_channel_mean": scaled.mean(axis=(0, 2, 3)).tolist(),
        "scaled_channel_std": scaled.std(axis=(0, 2, 3)).tolist(),
        "scaled_unit_std": bool(abs(std - 1.0) <= UNIT_STD_TOLERANCE),
        "unit_std_tolerance": UNIT_STD_TOLERANCE,
    }


def run(args: argparse.Namespace, params: Params) -> None:
    device = runtime.setup(params.device)
    vae = load_autoencoder(args.vae, device)
    latents = {}
    for split, path in (("train", args.train), ("val", args.val)):
        arrays, _ = load_arrays(path)
        latents[split] = (encode_latents(vae, arrays["images"], device), arrays["labels"])
    z = latents["train"][0]
    scale = scale_factor(z)
    stats = latent_statistics(z, scale)
    if isinstance(vae, PretrainedAutoencoderKL):
        stats["pretrained_scaling_factor"] = vae.scaling_factor
    for (split, (zs, labels)), out in zip(latents.items(), (args.train_out, args.val_out)):
        save_arrays(out, {"latents": zs, "labels": labels}, {"scale_factor": scale})
    write_json(args.metrics, stats)
    verdict = "within" if stats["scaled_unit_std"] else "NOT within"
    print(f"encode: latents {tuple(z.shape[1:])}, std {stats['latent_std']:.4f} -> scale factor {scale:.4f}; "
          f"scaled std {stats['scaled_std']:.4f}, {verdict} {UNIT_STD_TOLERANCE:.0%} of 1")  # fmt: skip

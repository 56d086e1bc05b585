"""Stage ``encode``: images -> latents (posterior means), once; scale factor 1/std.

Latent diffusion's scale-by-std (Rombach et al. 2022, sec. 4.3.2 / appendix G): the diffusion
model sees ``scale_factor * z`` with ``scale_factor = 1 / std(z_train)``, so its inputs have unit
variance whatever the autoencoder's latent scale.  The factor is stored with the latents.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import runtime
from ..config import Params
from ..io import load_arrays, save_arrays, write_json
from ..images import map_batches
from ..models.checkpoint import load_model
from ..models.vae import AutoencoderKL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--train", required=True, help="input: train arrays")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--train-out", required=True, help="output: train latents (.safetensors)")
    p.add_argument("--val-out", required=True, help="output: validation latents (.safetensors)")
    p.add_argument("--metrics", required=True, help="output: latent statistics (.json)")


def encode_means(vae: AutoencoderKL, images: np.ndarray, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """uint8 images (N, H, W, C) -> float32 posterior means (N, z, H/f, W/f)."""
    return map_batches(lambda x: vae.encode(x).mean.float().cpu().numpy(), images, batch_size, device)


def run(args: argparse.Namespace, params: Params) -> None:
    device = runtime.setup(params.device)
    vae, _ = load_model(AutoencoderKL, args.vae, device)
    latents = {}
    for split, path in (("train", args.train), ("val", args.val)):
        arrays, _ = load_arrays(path)
        latents[split] = (encode_means(vae, arrays["images"], device), arrays["labels"])
    z = latents["train"][0].astype(np.float64)
    std = float(z.std())
    scale = 1.0 / std
    stats = {
        "scale_factor": scale,
        "latent_std": std,
        "latent_mean": float(z.mean()),
        "latent_shape": list(z.shape[1:]),
        "channel_mean": z.mean(axis=(0, 2, 3)).tolist(),
        "channel_std": z.std(axis=(0, 2, 3)).tolist(),
    }
    for (split, (zs, labels)), out in zip(latents.items(), (args.train_out, args.val_out)):
        save_arrays(out, {"latents": zs, "labels": labels}, {"scale_factor": scale})
    write_json(args.metrics, stats)
    print(f"encode: latents {tuple(z.shape[1:])}, std {std:.4f} -> scale factor {scale:.4f}")

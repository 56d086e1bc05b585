"""The autoencoders behind one interface, and loading any of them from a checkpoint.

``AutoencoderKL``, ``AutoencoderVQ`` and ``PretrainedAutoencoderKL`` (a diffusers model) offer
``encode_latents(x) -> z`` (KL: posterior mean; VQ: pre-quantisation encoder output) and
``decode_latents(z) -> x`` (VQ: quantise, then decode), so the stages downstream of training never
branch on the kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from .checkpoint import load_model
from .pretrained import PretrainedAutoencoderKL
from .vae import AutoencoderKL
from .vq import AutoencoderVQ

AUTOENCODERS = (AutoencoderKL, AutoencoderVQ, PretrainedAutoencoderKL)
KINDS = {AutoencoderKL: "kl", AutoencoderVQ: "vq", PretrainedAutoencoderKL: "pretrained"}  # vae.kind of each class


class Autoencoder(Protocol):
    config: dict

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> latents (B, z, H/f, W/f)."""
        ...

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, H/f, W/f) -> images (B, C, H, W), unbounded."""
        ...


def build_autoencoder(kind: str, in_channels: int, channels: int, downsample: int, latent_channels: int,
                      **vq: object) -> AutoencoderKL | AutoencoderVQ:  # fmt: skip
    """``kind`` ``kl`` or ``vq``; ``vq`` takes its quantiser settings as keywords (see ``AutoencoderVQ``)."""
    if kind == "kl":
        return AutoencoderKL(in_channels, channels, downsample, latent_channels)
    if kind == "vq":
        return AutoencoderVQ(in_channels, channels, downsample, latent_channels, **vq)
    raise ValueError(f"unknown autoencoder kind {kind!r}; use 'kl' or 'vq'")


def load_autoencoder(
    path: str | Path, device: torch.device | str = "cpu"
) -> AutoencoderKL | AutoencoderVQ | PretrainedAutoencoderKL:
    """Any autoencoder from its checkpoint; the class is read from the metadata and must be one of ``AUTOENCODERS``."""
    return load_model(AUTOENCODERS, path, device)[0]

"""A pretrained diffusers ``AutoencoderKL`` behind our autoencoder interface (``vae.kind: pretrained``).

The ``train_vae`` stage copies the model from a local folder written by ``AutoencoderKL.save_pretrained``
(Rombach et al. 2022's KL autoencoder, e.g. Stable Diffusion's) into our checkpoint format: the weights
as float32 safetensors, the diffusers config as JSON metadata. Every later stage loads that checkpoint
like any other, so the folder is read once, offline (``local_files_only``, safetensors only: a
``.bin`` pickle is never read) and never looked up on the hub. diffusers is imported only when such a
model is built.

``encode_latents`` is the posterior mean, as for our KL autoencoder; the model's own ``scaling_factor``
is not applied: the ``encode`` stage scales by 1 / std of the training latents, as for every kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError

WEIGHTS = "diffusion_pytorch_model.safetensors"
KEY = "vae.pretrained"


def require_diffusers(what: str):
    """The diffusers module, or a ConfigError saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError(f"{what} needs the diffusers package: pip install -e '.[diffusers]'") from None
    return diffusers


def _refuse(path: str, why: str) -> ConfigError:
    return ConfigError(f"{KEY} must be a local folder holding a diffusers AutoencoderKL saved by save_pretrained "
                       f"(hub names are never downloaded), got '{path}' ({why})")  # fmt: skip


def check_folder(path: str, downsample: int, latent_channels: int) -> dict:
    """The folder's config.json, checked: an AutoencoderKL with safetensors weights whose downsampling
    factor and latent channels are ``vae.downsample`` and ``vae.latent_channels``. Reads JSON only."""
    folder = Path(path)
    if not folder.is_dir():
        raise _refuse(path, "no such folder")
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(path, "no config.json") from None
    except (OSError, ValueError) as e:
        raise _refuse(path, f"config.json unreadable: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("_class_name") != "AutoencoderKL":
        found = cfg.get("_class_name") if isinstance(cfg, dict) else None
        raise _refuse(path, f"config.json names {found!r}, not AutoencoderKL")
    if not (folder / WEIGHTS).is_file():
        raise _refuse(path, f"no {WEIGHTS}; pickled .bin weights are not read")
    factor = 2 ** (len(cfg.get("block_out_channels", [64])) - 1)  # one 2x downsampling per block but the last
    if factor != downsample:
        raise ConfigError(f"vae.downsample must be {factor}, the downsampling factor of {KEY} '{path}' "
                          f"(2^(len(block_out_channels) - 1) in its config.json), got {downsample}")  # fmt: skip
    if cfg.get("latent_channels", 4) != latent_channels:
        raise ConfigError(f"vae.latent_channels must be {cfg.get('latent_channels', 4)}, the latent channels of "
                          f"{KEY} '{path}', got {latent_channels}")  # fmt: skip
    return cfg


class PretrainedAutoencoderKL(nn.Module):
    """Our interface (``encode_latents``/``decode_latents``) over ``diffusers.AutoencoderKL(**diffusers_config)``."""

    def __init__(self, diffusers_config: dict):
        super().__init__()
        self.config = {"diffusers_config": diffusers_config}
        self.vae = require_diffusers("vae.kind pretrained").AutoencoderKL.from_config(diffusers_config)

    @property
    def scaling_factor(self) -> float:
        """The model's own latent scale (not used by the pipeline, which scales by 1 / std)."""
        return float(self.vae.config.scaling_factor)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> posterior means (B, z, H/f, W/f)."""
        return self.vae.encode(x).latent_dist.mean

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, H/f, W/f) -> images (B, C, H, W), unbounded."""
        return self.vae.decode(z).sample


def load_pretrained(path: str, downsample: int, latent_channels: int) -> PretrainedAutoencoderKL:
    """The checked folder's AutoencoderKL in float32, read offline, wrapped; ConfigError naming vae.pretrained."""
    check_folder(path, downsample, latent_channels)
    AutoencoderKL = require_diffusers("vae.kind pretrained").AutoencoderKL
    try:
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True, use_safetensors=True, torch_dtype=torch.float32,
                                            low_cpu_mem_usage=False)  # (True needs accelerate, and warns without it)
    except (OSError, ValueError, RuntimeError) as e:
        raise _refuse(path, f"diffusers cannot load it: {str(e).splitlines()[0]}") from None
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in vae.config.items() if not k.startswith("_")}
    model = PretrainedAutoencoderKL(config)
    model.vae.load_state_dict(vae.state_dict(), strict=True)
    return model.eval()

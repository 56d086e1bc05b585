"""Our UNet and autoencoders as diffusers models (``ModelMixin``/``ConfigMixin``), for ``ldmpipe export``.

The export copies this file and every module it imports relatively (``models/unet.py``, ...,
``runtime.py``) into the pipeline's ``unet/`` and ``vae/`` folders, keeping their layout, so that
diffusers loads them as the folder's own code (``trust_remote_code=True``) with no ldmpipe installed.
diffusers copies only the modules a component file imports *directly*, hence the imports below of
modules that ours import in turn. The networks are ours, not re-implementations: same outputs, bit for bit.

Why not diffusers' ``UNet2DModel``: it takes one ``norm_num_groups`` for every GroupNorm, while our
UNet has ``gcd(ch, min(32, ch // 4))`` groups at width ch (8/16/24/32 at 32/64/96/128 channels in the
default UNet), so no ``UNet2DModel`` config computes our function (README, "Export to diffusers").
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.unets.unet_2d import UNet2DOutput

from .config import ConfigError  # noqa: F401  (imported by .runtime; listed so that diffusers copies it)
from .constants import SCHEDULES  # noqa: F401  (imported by .config)
from .models.layers import group_norm  # noqa: F401  (imported by the models)
from .models.unet import UNet
from .models.vae import AutoencoderKL
from .models.vq import AutoencoderVQ
from .runtime import WHOLE  # noqa: F401  (imported by the models)


class LDMPipeUNet(ModelMixin, ConfigMixin):
    """``forward(sample, timestep, class_labels)``: scaled latents (B, C, h, w), a timestep (scalar or
    (B,)) and, for a class model (``num_classes`` K > 0), labels (B,) in {0..K} (K: the null class of
    classifier-free guidance) -> the network's output (eps, x0 or v: the scheduler's
    ``prediction_type``) as ``UNet2DOutput``."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        sample_size: int = 8,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (4,),
        dropout: float = 0.0,
        num_classes: int = 0,
        scale_shift: bool = False,
    ):
        super().__init__()
        self.unet = UNet(in_channels, sample_size, channels, channel_mult, num_res_blocks, attention_resolutions, dropout,
                         num_classes=num_classes, scale_shift=scale_shift)  # fmt: skip

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(sample.shape[0]) if t.ndim == 0 else t  # (B,), as the schedulers give it
        out = self.unet(sample, t, class_labels)  # (B, C, h, w)
        return UNet2DOutput(sample=out) if return_dict else (out,)


class LDMPipeAutoencoder(ModelMixin, ConfigMixin):
    """Our KL or VQ autoencoder: ``kind`` kl or vq, the other keys that class's constructor arguments
    (VQ's quantiser settings null for kl). ``scaling_factor`` follows diffusers' convention (Rombach et
    al. 2022, sec. 4.3.2): the diffusion model works on ``scaling_factor * z``, so a pipeline decodes
    ``latents / scaling_factor``; it is the 1 / std that our ``encode`` stage measured."""

    @register_to_config
    def __init__(
        self,
        kind: str = "kl",
        in_channels: int = 3,
        channels: int = 16,
        downsample: int = 4,
        latent_channels: int = 4,
        codebook_size: int | None = None,
        beta: float | None = None,
        ema: bool | None = None,
        decay: float | None = None,
        dead_threshold: float | None = None,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        if kind == "kl":
            self.autoencoder = AutoencoderKL(in_channels, channels, downsample, latent_channels)
        elif kind == "vq":
            self.autoencoder = AutoencoderVQ(in_channels, channels, downsample, latent_channels, codebook_size, beta,
                                             ema, decay, dead_threshold)  # fmt: skip
        else:
            raise ValueError(f"kind must be kl or vq, got {kind!r}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> unscaled latents (B, z, H/f, W/f) (KL: posterior mean;
        VQ: pre-quantisation)."""
        return self.autoencoder.encode_latents(x)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Unscaled latents (B, z, H/f, W/f) -> images (B, C, H, W), unbounded (``DecoderOutput.sample``);
        VQ quantises first."""
        x = self.autoencoder.decode_latents(z)
        return DecoderOutput(sample=x) if return_dict else (x,)

"""KL-regularised convolutional autoencoder (Rombach et al. 2022, sec. 3 and appendix G).

The encoder maps an image (B, C, H, W) in [-1, 1] to the mean and log-variance of a diagonal
Gaussian over latents (B, z, H/f, W/f); the decoder maps latents back to images.  Training uses a
reconstruction loss plus a small KL weight towards N(0, I), so the latent space stays close to
an isotropic Gaussian without squeezing out detail.  The encoder and decoder builders are shared
with the VQ autoencoder (``ldmpipe.models.vq``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime import WHOLE, Shard, to_device
from .layers import Downsample, ResBlock, Upsample, group_norm


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))) over latents of shape (B, z, h, w)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Reparameterised sample z = mean + std * noise (Kingma & Welling 2014, eq. 10)."""
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) in closed form, summed over latent dims: (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


def level_channels(channels: int, downsample: int) -> list[int]:
    """Widths per resolution level: double per level, capped at 4x the base width."""
    levels = int(math.log2(downsample)) + 1
    return [channels * min(2**i, 4) for i in range(levels)]


def build_encoder(in_channels: int, widths: list[int], out_channels: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, out, H/f, W/f): conv_in at full resolution, then per level a strided
    conv and a ResBlock (none at full resolution, where convolutions cost the most on a CPU)."""
    enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
    for prev, w in zip(widths, widths[1:]):
        enc += [Downsample(prev, w), ResBlock(w, w)]
    enc += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], out_channels, 3, padding=1)]
    return nn.Sequential(*enc)


def build_decoder(latent_channels: int, widths: list[int], out_channels: int) -> nn.Sequential:
    """(B, z, H/f, W/f) -> (B, C, H, W), mirroring the encoder: conv_in and a ResBlock at latent
    resolution, then per level an upsampling conv (and a ResBlock below full resolution), norm, conv_out."""
    rev = widths[::-1]
    dec: list[nn.Module] = [nn.Conv2d(latent_channels, rev[0], 3, padding=1), ResBlock(rev[0], rev[0])]
    for i, (prev, w) in enumerate(zip(rev, rev[1:])):
        dec.append(Upsample(prev, w))
        if i < len(rev) - 2:
            dec.append(ResBlock(w, w))
    dec += [group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1)]
    return nn.Sequential(*dec)


class AutoencoderKL(nn.Module):
    """The shared autoencoder interface (also ``AutoencoderVQ``): ``encode_latents`` gives the
    latents the diffusion model works on, ``decode_latents`` maps them back to images, and
    ``forward_train`` gives a training reconstruction with its regulariser."""

    def __init__(self, in_channels: int, channels: int, downsample: int, latent_channels: int):
        super().__init__()
        self.config = dict(
            in_channels=in_channels, channels=channels, downsample=downsample, latent_channels=latent_channels
        )
        widths = level_channels(channels, downsample)
        self.encoder = build_encoder(in_channels, widths, 2 * latent_channels)  # moments: mean, logvar
        self.decoder = build_decoder(latent_channels, widths, in_channels)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))  # moments (B, 2z, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, C, H, W), unbounded; clamp to [-1, 1] for images

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> posterior means (B, z, H/f, W/f), the diffusion model's latents."""
        return self.encode(x).mean

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, H/f, W/f) -> images (B, C, H, W), unbounded."""
        return self.decode(z)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight, where the adversarial weight compares gradient norms."""
        return self.decoder[-1].weight

    def forward_train(self, x: torch.Tensor, gen: torch.Generator, shard: Shard = WHOLE) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction of a reparameterised sample (noise drawn from ``gen`` on the CPU, for the
        global batch when ``x`` is one rank's slice) and the per-pixel KL(q(z|x) || N(0, I)):
        (recon (B, C, H, W), kl (), logs as tensors)."""
        posterior = self.encode(x)
        noise = to_device(shard.randn(tuple(posterior.mean.shape), gen), x.device)
        recon = self.decode(posterior.sample(noise))
        kl = posterior.kl().mean() / x[0].numel()
        return recon, kl, {"kl": kl.detach()}

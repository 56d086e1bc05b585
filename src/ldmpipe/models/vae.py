"""KL-regularised convolutional autoencoder (Rombach et al. 2022, sec. 3 and appendix G).

The encoder maps an image (B, C, H, W) in [-1, 1] to the mean and log-variance of a diagonal
Gaussian over latents (B, z, H/f, W/f); the decoder maps latents back to images.  Training uses a
reconstruction loss plus a small KL weight towards N(0, I), so the latent space stays close to
an isotropic Gaussian without squeezing out detail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


class AutoencoderKL(nn.Module):
    def __init__(self, in_channels: int, channels: int, downsample: int, latent_channels: int):
        super().__init__()
        self.config = dict(
            in_channels=in_channels, channels=channels, downsample=downsample, latent_channels=latent_channels
        )
        widths = level_channels(channels, downsample)
        # Encoder: conv_in at full resolution, then per level a strided conv and a ResBlock;
        # no ResBlock at full resolution, where convolutions cost the most on a CPU.
        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for prev, w in zip(widths, widths[1:]):
            enc += [Downsample(prev, w), ResBlock(w, w)]
        enc += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # Decoder mirrors it: conv_in and a ResBlock at latent resolution, then per level an
        # upsampling conv (and a ResBlock below full resolution), norm, conv_out.
        rev = widths[::-1]
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, rev[0], 3, padding=1), ResBlock(rev[0], rev[0])]
        for i, (prev, w) in enumerate(zip(rev, rev[1:])):
            dec.append(Upsample(prev, w))
            if i < len(rev) - 2:
                dec.append(ResBlock(w, w))
        dec += [group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))  # moments (B, 2z, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, C, H, W), unbounded; clamp to [-1, 1] for images

    def loss(self, x: torch.Tensor, noise: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction (L1 + MSE, per pixel) plus ``kl_weight`` times the per-pixel KL."""
        posterior = self.encode(x)
        recon = self.decode(posterior.sample(noise))
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        total = rec + kl_weight * kl
        return total, {"loss": total.item(), "rec": rec.item(), "kl": kl.item()}

"""PatchGAN discriminator (Isola et al. 2017, sec. 3.2.2), as in latent diffusion's autoencoders.

A small convolutional net whose output is a map of real/fake logits, one per overlapping image
patch, rather than one logit per image: it judges local texture and leaves global structure to
the reconstruction loss.  Layout of taming-transformers' ``NLayerDiscriminator`` (Esser et al.
2021): 4x4 convolutions, stride 2 then 1, BatchNorm, LeakyReLU(0.2), weights ~ N(0, 0.02).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) -> patch logits (B, 1, H / 2^n_layers - 2, W / 2^n_layers - 2)."""

    def __init__(self, in_channels: int, channels: int = 64, n_layers: int = 2):
        super().__init__()
        self.config = dict(in_channels=in_channels, channels=channels, n_layers=n_layers)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden layer keeps the resolution
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2)]  # fmt: skip
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

"""The denoising UNet (Ho et al. 2020, appendix B; Dhariwal & Nichol 2021, sec. 3).

Input: noisy scaled latents (B, C, h, w) and integer timesteps (B,).  Output: same shape as the input,
whatever ``diffusion.prediction`` trains it to predict: the noise, x0 or v (`diffusion.parameterization`).  Resolution levels halve the feature map; self-attention runs at the
feature-map sizes listed in ``attention_resolutions``.

With ``num_classes`` K > 0 the network is class-conditional: a learned embedding of the class label
(B,) in {0..K-1}, or K for the null class of classifier-free guidance (Ho & Salimans 2022), is added
to the time embedding, as diffusers' ``UNet2DModel(num_class_embeds=...)`` and DiT do.  With K = 0
(the default) the module and its parameters are exactly those of the unconditional network.

``scale_shift`` conditions every residual block on the (time + class) embedding by adaptive group
normalisation, a per-channel scale and shift (Dhariwal & Nichol 2021, sec. 3), instead of adding it.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import AttentionBlock, Downsample, ResBlock, Upsample, group_norm, timestep_embedding


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        sample_size: int,
        channels: int,
        channel_mult: tuple[int, ...] | list[int],
        num_res_blocks: int,
        attention_resolutions: tuple[int, ...] | list[int],
        dropout: float = 0.0,
        num_classes: int = 0,
        scale_shift: bool = False,
    ):
        super().__init__()
        self.config = dict(
            in_channels=in_channels, sample_size=sample_size, channels=channels, channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks, attention_resolutions=list(attention_resolutions), dropout=dropout,
        )  # fmt: skip
        if num_classes:  # only then: an unconditional checkpoint's config (its metadata bytes) stays as it was
            self.config["num_classes"] = num_classes
        if scale_shift:  # likewise
            self.config["scale_shift"] = True
        self.num_classes = num_classes
        temb = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        # Down path: every block's output is kept for a skip connection.
        self.down = nn.ModuleList()
        skips, ch, size = [channels], channels, sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, channels * mult, temb, dropout, scale_shift)])
                ch = channels * mult
                if size in attention_resolutions:
                    block.append(AttentionBlock(ch))
                self.down.append(block)
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                size //= 2

        self.mid = nn.ModuleList([ResBlock(ch, ch, temb, dropout, scale_shift), AttentionBlock(ch),
                                  ResBlock(ch, ch, temb, dropout, scale_shift)])

        # Up path: one more block per level than on the way down, each eating one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), channels * mult, temb, dropout, scale_shift)])
                ch = channels * mult
                if size in attention_resolutions:
                    block.append(AttentionBlock(ch))
                if level > 0 and i == num_res_blocks:
                    block.append(Upsample(ch))
                    size *= 2
                self.up.append(block)

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start as the zero predictor (Ho et al. 2020 code)
        nn.init.zeros_(self.out[-1].bias)
        # Created last, so every other weight is initialised as in the unconditional network. K + 1 rows: the
        # last is the null class. Initialised N(0, 0.02^2) as DiT's label embedding (Peebles & Xie 2023).
        self.class_embed = nn.Embedding(num_classes + 1, temb) if num_classes else None
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    @property
    def null_class(self) -> int:
        """The label of the null class (no condition): K."""
        if not self.num_classes:
            raise ValueError("an unconditional UNet has no null class")
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.channels))  # (B, 4C)
        if (y is None) != (self.class_embed is None):
            raise ValueError("a class-conditional UNet needs labels y (B,), an unconditional one takes none")
        if y is not None:
            temb = temb + self.class_embed(y)  # (B, 4C): label 0..K-1, or K = null
        h = self.conv_in(x)  # (B, C, h, w)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, temb)
            hs.append(h)
        h = self._run(self.mid, h, temb)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), temb)
        return self.out(h)

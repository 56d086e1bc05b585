"""VQ autoencoder (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The encoder maps an image (B, C, H, W) in [-1, 1] to continuous latents z_e (B, D, H/f, W/f); the
quantiser replaces each D-vector by its nearest code among ``codebook_size`` and the decoder maps
the quantised latents back to images.  As in latent diffusion (Rombach et al. 2022, sec. 3), the
diffusion model works on the *pre-quantisation* latents z_e and the decoder quantises first.

Training loss of the quantiser (eq. 3): ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2; with EMA
codebook updates (appendix A.1) the first term is replaced by moving averages of the assigned
encoder outputs.  Codes that fall out of use ("dead") are re-initialised from encoder outputs
of the current batch (as in Jukebox, Dhariwal et al. 2020), chosen with a seeded generator.
All codebook state lives in buffers, so it is saved with the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import WHOLE, Shard, gather
from .vae import build_decoder, build_encoder, level_channels


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of (B, D, h, w) latents with a codebook of K vectors (K, D)."""

    def __init__(self, codebook_size: int, dim: int, beta: float, ema: bool, decay: float, dead_threshold: float,
                 eps: float = 1e-5):  # fmt: skip
        super().__init__()
        self.beta, self.ema, self.decay, self.dead_threshold, self.eps = beta, ema, decay, dead_threshold, eps
        codebook = torch.randn(codebook_size, dim)
        if ema:
            # N_k (cluster sizes) and m_k (sums of assigned vectors), started as if each code had been
            # seen once at its initial value, so the first update is a weighted mean, not a division by ~0
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        # moving average of assignments per batch, for dead-code detection; zero at first, so the
        # first training step re-initialises every code from the data (a data-dependent init)
        self.register_buffer("usage", torch.zeros(codebook_size))

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index (N,) of the nearest code to each vector of (N, D): argmin ||z||^2 - 2 z.e + ||e||^2."""
        e = self.codebook
        d = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.T + e.pow(2).sum(1)[None]  # (N, K)
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e (B, D, h, w) -> (z_q with straight-through gradient (B, D, h, w), loss (), indices (B, h, w))."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N = B h w, D)
        idx = self.nearest(flat.detach())
        q = F.embedding(idx, self.codebook)  # (N, D)
        loss = self.beta * F.mse_loss(flat, q.detach())  # commitment: pulls z_e towards its code
        if not self.ema:
            loss = loss + F.mse_loss(q, flat.detach())  # codebook term: pulls the code towards z_e
        # straight-through estimator (eq. 3): the forward pass uses q, the backward pass copies
        # the decoder's gradient to z_e as if quantisation were the identity
        q = flat + (q - flat).detach()
        return q.reshape(b, h, w, d).permute(0, 3, 1, 2), loss, idx.reshape(b, h, w)

    @torch.no_grad()
    def update(self, z: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        """After a training forward: EMA codebook step (if on), usage average, dead-code re-initialisation.

        z (B, D, h, w) are the batch's encoder outputs, idx (B, h, w) their codes.
        """
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N, D)
        onehot = F.one_hot(idx.flatten(), len(self.codebook)).to(flat.dtype)  # (N, K)
        counts = onehot.sum(0)  # (K,)
        if self.ema:
            # van den Oord et al. 2017, appendix A.1, eqs. 6-8, with Laplace smoothing of N_k
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
            self.embed_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1.0 - self.decay)
            n = self.cluster_size.sum()
            size = (self.cluster_size + self.eps) / (n + len(self.codebook) * self.eps) * n
            self.codebook.copy_(self.embed_sum / size[:, None])
        self.usage.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        dead = torch.nonzero(self.usage < self.dead_threshold).flatten()  # (n_dead,)
        if len(dead) == 0:
            return
        # re-initialise dead codes from the batch's encoder outputs (seeded choice, no repeats if possible)
        n = len(flat)
        pick = torch.randperm(n, generator=gen)[: len(dead)] if len(dead) <= n else torch.randint(n, (len(dead),), generator=gen)
        new = flat[pick.to(flat.device)]  # (n_dead, D)
        self.codebook.data[dead] = new
        if self.ema:
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = new
        self.usage[dead] = 2.0 * self.dead_threshold  # a grace period before it may count as dead again


def perplexity(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """exp(H(p)) of the code distribution over ``indices``, computed on their device (no host sync), in
    float64 (float32 on MPS, which has no float64)."""
    dtype = torch.float32 if indices.device.type == "mps" else torch.float64
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).to(dtype)  # (K,)
    p = counts / counts.sum()
    return torch.exp(-torch.where(counts > 0, p * p.clamp_min(torch.finfo(dtype).tiny).log(), 0.0).sum())


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of codes used and perplexity exp(H(p)) of the code distribution p over indices (any shape).

    Perplexity is the effective number of codes: K for uniform use, 1 when one code takes all.
    """
    counts = torch.bincount(indices.flatten().cpu(), minlength=codebook_size).double()  # (K,)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * p.log()).sum())
    return {"codebook_usage": float((counts > 0).sum()) / codebook_size, "perplexity": math.exp(entropy)}


class AutoencoderVQ(nn.Module):
    """Same encoder/decoder as ``AutoencoderKL`` with a vector quantiser between them; same interface."""

    def __init__(self, in_channels: int, channels: int, downsample: int, latent_channels: int, codebook_size: int,
                 beta: float, ema: bool, decay: float, dead_threshold: float):  # fmt: skip
        super().__init__()
        self.config = dict(
            in_channels=in_channels, channels=channels, downsample=downsample, latent_channels=latent_channels,
            codebook_size=codebook_size, beta=beta, ema=ema, decay=decay, dead_threshold=dead_threshold,
        )  # fmt: skip
        widths = level_channels(channels, downsample)
        self.encoder = build_encoder(in_channels, widths, latent_channels)
        self.quantizer = VectorQuantizer(codebook_size, latent_channels, beta, ema, decay, dead_threshold)
        self.decoder = build_decoder(latent_channels, widths, in_channels)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> pre-quantisation latents z_e (B, D, H/f, W/f)."""
        return self.encoder(x)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, D, h, w) -> nearest codes (B, D, h, w) and their indices (B, h, w)."""
        q, _, idx = self.quantizer(z)
        return q, idx

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, D, h, w) -> quantised -> images (B, C, H, W), unbounded."""
        return self.decoder(self.quantize(z)[0])

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder[-1].weight

    def forward_train(self, x: torch.Tensor, gen: torch.Generator, shard: Shard = WHOLE) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(recon (B, C, H, W), quantiser loss (), logs); updates the codebook state in training mode.

        Data-parallel, ``x`` is one rank's slice: the codebook update sees the global batch's encoder
        outputs and codes (gathered in rank order), so every rank updates its codebook identically.
        """
        z = self.encoder(x)  # (B, D, h, w)
        q, loss, idx = self.quantizer(z)
        recon = self.decoder(q)
        idx = gather(idx, shard)  # (global B, h, w)
        if self.training:
            self.quantizer.update(gather(z.detach(), shard), idx, gen)
        return recon, loss, {"vq": loss.detach(), "perplexity": perplexity(idx, len(self.quantizer.codebook))}

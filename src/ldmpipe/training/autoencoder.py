"""The autoencoder's training loss: reconstruction, regulariser and an optional adversarial term.

loss = L1 + MSE (per pixel) + w_reg * regulariser + [after ``start`` steps] lambda * w_adv * L_G

The regulariser is the model's own (KL to N(0, I) for ``AutoencoderKL``, codebook and commitment
terms for ``AutoencoderVQ``).  The adversarial part follows latent diffusion's
``LPIPSWithDiscriminator`` (Rombach et al. 2022) without the perceptual term: hinge losses for a
PatchGAN, and the adaptive weight of Esser et al. 2021 (Taming Transformers, eq. 7)
lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_G|| + 1e-4), clamped to [0, 1e4], where G_L is the
decoder's last layer.  The discriminator takes its own optimiser step inside the loss, so the
generic training loop keeps one optimiser for the autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import WHOLE, Shard


@dataclass(frozen=True)
class Adversary:
    """The discriminator, its optimiser, its weight in the autoencoder loss and when it starts."""

    disc: nn.Module
    opt: torch.optim.Optimizer
    weight: float
    start: int


class TrainingForward(nn.Module):
    """``forward`` = the autoencoder's ``forward_train``: DistributedDataParallel hooks ``forward``."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, gen: torch.Generator, shard: Shard = WHOLE):
        return self.autoencoder.forward_train(x, gen, shard)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017): mean relu(1 - D(x)) + mean relu(1 + D(G(x))), halved."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """lambda = ||grad L_rec|| / (||grad L_G|| + 1e-4) at the decoder's last layer, clamped [0, 1e4], detached."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def discriminator_step(adv: Adversary, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """One optimiser step of the discriminator on real images and (detached) reconstructions (B, C, H, W)."""
    adv.disc.requires_grad_(True)
    adv.opt.zero_grad(set_to_none=True)
    loss = hinge_d_loss(adv.disc(real.detach()), adv.disc(fake.detach()))
    loss.backward()
    adv.opt.step()
    return loss.detach()


def autoencoder_loss(
    vae: nn.Module, x: torch.Tensor, gen: torch.Generator, reg_weight: float, step: int, adv: Adversary | None = None,
    shard: Shard = WHOLE, forward: nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The autoencoder's loss on images x (B, C, H, W) at 1-based ``step``; updates the discriminator if on.

    Data-parallel: ``x`` is this rank's slice, ``forward`` the DDP-wrapped ``TrainingForward(vae)``
    (the adversary is single-process only: its BatchNorm statistics would be per rank).
    """
    recon, reg, reg_logs = (forward or TrainingForward(vae))(x, gen, shard)
    rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
    total = rec + reg_weight * reg
    adv_logs: dict[str, float] = {}
    if adv is not None and step > adv.start:
        # the discriminator steps first: its in-place update must not touch weights that the
        # generator's graph (backpropagated later by the training loop) has saved
        d_loss = discriminator_step(adv, x, recon)
        adv.disc.requires_grad_(False)  # gradients flow through D to the decoder, not into D
        g_loss = -adv.disc(recon).mean()
        lam = adaptive_weight(rec, g_loss, vae.last_layer)
        total = total + adv.weight * lam * g_loss
        adv_logs = {"g_loss": g_loss.detach(), "d_loss": d_loss, "adv_weight": lam}
    return total, {"loss": total.detach(), "rec": rec.detach(), **reg_logs, **adv_logs}

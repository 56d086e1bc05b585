"""How well an autoencoder reconstructs, and what its latent space looks like.

- MSE on [0, 1] pixels and PSNR = 10 log10(1 / MSE) over the whole split.
- SSIM (Wang et al. 2004) from torchmetrics: 11x11 Gaussian window (sigma 1.5), mean over images.
- (rFID, the Fréchet distance of reconstructions to originals in the frozen evaluator's features,
  is computed by the ``evaluate_vae`` stage with ``ldmpipe.metrics``, so that training does not
  depend on the metrics code.)
- For VQ: codebook usage and perplexity over the split (``ldmpipe.models.vq.codebook_stats``).
- A 2-D PCA of the latents (eigenvectors of their float64 covariance) for a picture.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .images import map_batches, to_uint8
from .models.autoencoder import Autoencoder
from .models.vq import AutoencoderVQ, codebook_stats


def reconstruct(vae: Autoencoder, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Decode the latents of each image (KL: posterior mean; VQ: quantised): uint8 (N, H, W, C) -> uint8 (N, H, W, C)."""
    return map_batches(lambda x: to_uint8(vae.decode_latents(vae.encode_latents(x))), images, batch_size, device)


def recon_metrics(originals: np.ndarray, recons: np.ndarray) -> dict[str, float]:
    """MSE on [0, 1] pixels and PSNR = 10 log10(1 / MSE), over the whole split."""
    mse = float(np.mean((originals.astype(np.float64) / 255 - recons.astype(np.float64) / 255) ** 2))
    return {"val_mse": mse, "val_psnr": 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")}


def ssim(originals: np.ndarray, recons: np.ndarray, batch_size: int = 500) -> float:
    """Mean SSIM of uint8 images (N, H, W, C) against their originals, on [0, 1] in float64 (torchmetrics)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    def to_unit(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).double() / 255.0  # (B, C, H, W)

    values = [
        structural_similarity_index_measure(to_unit(recons[i : i + batch_size]), to_unit(originals[i : i + batch_size]),
                                            data_range=1.0, reduction="none")  # fmt: skip
        for i in range(0, len(originals), batch_size)
    ]
    return float(torch.cat(values).mean())


@torch.no_grad()
def code_indices(vae: AutoencoderVQ, images: np.ndarray, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """The code index of every latent position: uint8 images (N, H, W, C) -> int64 (N, h, w)."""
    return map_batches(lambda x: vae.quantize(vae.encode_latents(x))[1].cpu().numpy(), images, batch_size, device)


def vq_metrics(vae: AutoencoderVQ, images: np.ndarray, device: torch.device) -> dict[str, float]:
    """Codebook usage (fraction of codes used) and perplexity over a split, with the codebook size."""
    k = vae.config["codebook_size"]
    return {**codebook_stats(torch.from_numpy(code_indices(vae, images, device)), k), "codebook_size": k}


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Project latents (N, ...) flattened to (N, D) on their two principal axes: (N, 2), explained variance ratios.

    Each axis's sign is fixed (largest loading positive), so the picture does not flip between runs.
    """
    x = torch.from_numpy(z.reshape(len(z), -1)).double()
    x = x - x.mean(0)
    cov = x.T @ x / (len(x) - 1)  # (D, D)
    w, v = torch.linalg.eigh(cov)  # ascending eigenvalues
    axes = v[:, -2:].flip(1)  # (D, 2), largest first
    axes = axes * torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    ratio = (w[-2:].flip(0) / w.clamp(min=0).sum()).tolist()
    return (x @ axes).numpy(), ratio

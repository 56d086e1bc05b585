"""Sample-quality metrics that stack: features -> statistics -> distances.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to features,
    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2),
and IS (Salimans et al. 2016) is exp(E_x KL(p(y|x) || p(y))).  All statistics are float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .images import to_model_input


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition.

    Eigenvalues below zero (rounding) are clipped to zero, so the result is real and symmetric.
    """
    w, v = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, sqrt_sigma1: np.ndarray | None = None
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr sqrt(S1 S2) = tr sqrt(sqrt(S1) S2 sqrt(S1)): the inner matrix is symmetric PSD, so one
    ``eigh`` gives it stably in float64 (no complex parts, unlike a general ``sqrtm``).  Pass
    ``sqrt_sigma1`` (precomputed for reference statistics) to save one eigendecomposition.
    Rounding can make the result a tiny negative number; it is returned as is.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = sqrtm_psd(s1) if sqrt_sigma1 is None else np.asarray(sqrt_sigma1, np.float64)
    inner = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS over ``splits`` equal chunks of class probabilities (N, K): (mean, std).

    The std is the population std (ddof=0) over splits, as in Salimans et al.'s code and
    torch-fidelity.  Probabilities are used in float64.
    """
    p = np.asarray(probs, dtype=np.float64)
    if splits < 1 or p.shape[0] < splits:
        raise ValueError(f"need at least {splits} samples for {splits} splits, got {p.shape[0]}")
    scores = []
    for chunk in np.array_split(p, splits):
        py = chunk.mean(axis=0, keepdims=True)  # marginal p(y) over the chunk, (1, K)
        kl = (chunk * (np.log(np.clip(chunk, 1e-30, None)) - np.log(np.clip(py, 1e-30, None)))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@torch.no_grad()
def extract(
    features_fn: Callable[[torch.Tensor], torch.Tensor],
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and softmax probabilities (N, K) in float64 of uint8 images (N, H, W, C)."""
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start : start + batch_size], device)
        f = features_fn(x)
        feats.append(f.double().cpu().numpy())
        probs.append(torch.softmax(logits_fn(f).double(), dim=1).cpu().numpy())
    return np.concatenate(feats), np.concatenate(probs)

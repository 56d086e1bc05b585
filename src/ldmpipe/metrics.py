"""Sample-quality metrics that stack: features -> statistics -> distances.

All metrics take features (N, D) or class probabilities (N, K) and compute in float64:

- FID (Heusel et al. 2017): Fréchet distance between Gaussians fitted to features,
      d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2).
- IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits.
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, over subsets.
- Precision and recall (Kynkäänniemi et al. 2019): coverage of k-NN manifolds.

Dense linear algebra runs through torch (float64 on the CPU, MKL/LAPACK), which computes the
symmetric eigendecompositions FID needs several times faster than numpy's OpenBLAS here.  The
eigensolvers run single-threaded: their tridiagonalisation is memory-bound, so a second thread
gains little, while on a shared, oversubscribed CPU its fine-grained parallel steps (one per
column) slowed them down up to tenfold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .images import to_model_input


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _f64(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


@contextmanager
def _single_threaded() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Square root (D, D) of a symmetric positive semi-definite matrix (D, D) via ``eigh``.

    Eigenvalues below zero (rounding) are clipped to zero, so the result is real and symmetric.
    Store it with reference statistics: ``frechet_distance(..., sqrt_sigma1=...)`` then costs
    one symmetric eigenvalue computation per evaluation.
    """
    s = _f64(sigma)
    with _single_threaded():
        w, v = torch.linalg.eigh((s + s.T) / 2.0)
    return ((v * w.clamp(min=0.0).sqrt()) @ v.T).numpy()


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, sqrt_sigma1: np.ndarray | None = None
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); means (D,), covariances (D, D).

    S1 S2 is similar to the symmetric PSD matrix M = sqrt(S1) S2 sqrt(S1), so
    tr sqrt(S1 S2) = sum_i sqrt(lambda_i(M)): one ``eigvalsh`` in float64, no general ``sqrtm``
    (scipy's Schur-based sqrtm, used by pytorch-fid, is several times slower and complex-valued).
    Eigenvalues of M below zero (rounding) count as zero.  Pass ``sqrt_sigma1 = sqrtm_psd(sigma1)``
    precomputed for reference statistics to skip one eigendecomposition.  Rounding can make the
    result a tiny negative number (e.g. for identical statistics); it is returned as is.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if not (mu1.shape == mu2.shape == (d,) and s1.shape == s2.shape == (d, d)):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    r1 = _f64(sqrtm_psd(s1) if sqrt_sigma1 is None else sqrt_sigma1)
    m = r1 @ _f64(s2) @ r1
    with _single_threaded():
        eig = torch.linalg.eigvalsh((m + m.T) / 2.0)
    tr_covmean = float(eig.clamp(min=0.0).sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS over ``splits`` contiguous chunks of class probabilities (N, K): (mean, std).

    Chunk i is rows [i N // splits, (i + 1) N // splits), as in Salimans et al.'s code and
    torch-fidelity (which shuffles first; pass shuffled rows for that).  The std is the population
    std (ddof=0) over the splits, as both of them report it.
    """
    p = np.asarray(probs, dtype=np.float64)
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need at least {splits} samples for {splits} splits, got {n}")
    log_p = np.log(np.clip(p, 1e-300, None))
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        log_py = np.log(np.clip(p[lo:hi].mean(axis=0), 1e-300, None))  # marginal p(y) over the chunk, (K,)
        kl = (p[lo:hi] * (log_p[lo:hi] - log_py)).sum(axis=1)  # KL(p(y|x) || p(y)), (chunk,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def polynomial_mmd2(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, Lemma 6) between samples x (m, D) and y (n, D).

    Kernel k(a, b) = (gamma a.b + coef0)^degree with gamma = 1 / D by default (Bińkowski et al.
    2018, KID).  MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
    - 2 sum_{i,j} k(x_i, y_j) / (mn); it is unbiased, so it can be slightly negative.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    g = 1.0 / x.shape[1] if gamma is None else gamma
    kxx, kyy, kxy = ((a @ b.T * g + coef0) ** degree for a, b in ((x, x), (y, y), (x, y)))
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within - 2.0 * kxy.sum() / (m * n))


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    rng: int | np.random.RandomState | np.random.Generator = 2020,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> tuple[float, float]:
    """KID between features real (N1, D) and fake (N2, D): mean and population std (ddof=0) of
    ``polynomial_mmd2`` over ``subsets`` random subsets of ``subset_size`` rows of each, drawn
    without replacement (Bińkowski et al. 2018).

    Per subset the real rows are drawn first, then the fake rows, each with
    ``rng.choice(N, subset_size, replace=False)``; an int seeds ``np.random.RandomState``, so with
    the same seed (torch-fidelity's default 2020) the subsets are torch-fidelity's.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) < subset_size or subset_size < 2:
        raise ValueError(f"need 2 <= subset_size <= samples per set, got {subset_size} for {len(real)}, {len(fake)}")
    rng = np.random.RandomState(rng) if isinstance(rng, (int, np.integer)) else rng
    mmds = []
    for _ in range(subsets):
        r = real[rng.choice(len(real), subset_size, replace=False)]
        f = fake[rng.choice(len(fake), subset_size, replace=False)]
        mmds.append(polynomial_mmd2(r, f, degree, gamma, coef0))
    return float(np.mean(mmds)), float(np.std(mmds))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _knn_radii2(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Squared distance (N,) from each row of x (N, D) to its k-th nearest other row."""
    out = np.empty(len(x))
    for s in range(0, len(x), batch_size):
        d = _sq_dists(x[s : s + batch_size], x)
        d[np.arange(len(d)), s + np.arange(len(d))] = 0.0  # self, exactly; column k is the k-th neighbour
        out[s : s + batch_size] = np.partition(d, k, axis=1)[:, k]
    return out


def _in_manifold(queries: np.ndarray, points: np.ndarray, radii2: np.ndarray, batch_size: int) -> np.ndarray:
    """Whether each query (Q, D) lies in a ball of squared radius radii2 (P,) around some point (P, D)."""
    chunks = (queries[s : s + batch_size] for s in range(0, len(queries), batch_size))
    return np.concatenate([(_sq_dists(q, points) <= radii2).any(axis=1) for q in chunks])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 2) of features real (N1, D), fake (N2, D).

    A set's manifold is the union of balls around its points, each reaching the point's k-th nearest
    neighbour in the same set.  Precision: fraction of fake points inside the real manifold;
    recall: fraction of real points inside the fake manifold.  A point on a ball's surface counts as
    inside.  ``batch_size`` rows of distances are held at a time; it does not change the result.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {len(real)} real and {len(fake)} fake")
    centre = real.mean(axis=0)  # centring keeps |a|^2 + |b|^2 - 2 a.b accurate for far-off features
    real, fake = real - centre, fake - centre
    precision = _in_manifold(fake, real, _knn_radii2(real, k, batch_size), batch_size).mean()
    recall = _in_manifold(real, fake, _knn_radii2(fake, k, batch_size), batch_size).mean()
    return float(precision), float(recall)


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
        feats.append(f.cpu().double().numpy())  # float64 on the CPU (MPS has none)
        probs.append(torch.softmax(logits_fn(f).cpu().double(), dim=1).numpy())
    return np.concatenate(feats), np.concatenate(probs)

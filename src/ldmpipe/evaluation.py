"""All sample-quality metrics of one set of images against a reference set, with one extractor.

features -> statistics -> distances (``ldmpipe.metrics``): FID against the reference's Gaussian
(its covariance square root precomputed), IS from the extractor's class probabilities, KID and
precision/recall against the reference features themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    sqrtm_psd,
)


@dataclass(frozen=True)
class Reference:
    """Real features (N, D) and their float64 Gaussian fit, with sqrt(sigma) for FID."""

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    sqrt_sigma: np.ndarray

    @classmethod
    def from_features(cls, features: np.ndarray) -> Reference:
        mu, sigma = feature_statistics(features)
        return cls(np.asarray(features, np.float64), mu, sigma, sqrtm_psd(sigma))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "mu": self.mu, "sigma": self.sigma, "sqrt_sigma": self.sqrt_sigma}

    def fid(self, features: np.ndarray) -> float:
        """FID of features (N, D) against this reference, reusing its precomputed sqrt(sigma)."""
        mu, sigma = feature_statistics(features)
        return frechet_distance(self.mu, self.sigma, mu, sigma, sqrt_sigma1=self.sqrt_sigma)


@dataclass(frozen=True)
class MetricSettings:
    is_splits: int
    kid_subsets: int
    kid_subset_size: int
    pr_k: int
    seed: int  # for KID's random subsets


def score(features: np.ndarray, probs: np.ndarray | None, ref: Reference, s: MetricSettings) -> dict[str, float]:
    """FID, IS, KID (mean, std) and precision/recall of features (N, D) [and probs (N, K)] against ``ref``."""
    out = {"fid": ref.fid(features)}
    if probs is not None:
        out["is_mean"], out["is_std"] = inception_score(probs, s.is_splits)
    size = min(s.kid_subset_size, len(features), len(ref.features))
    out["kid_mean"], out["kid_std"] = kernel_inception_distance(
        ref.features, features, s.kid_subsets, size, rng=np.random.RandomState(s.seed % 2**32)
    )
    out["precision"], out["recall"] = precision_recall(ref.features, features, k=s.pr_k)
    return out

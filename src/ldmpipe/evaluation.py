"""All sample-quality metrics of one set of images against a reference set, with one extractor.

features -> statistics -> distances (``ldmpipe.metrics``): FID against the reference's Gaussian
(its covariance square root precomputed), IS from the extractor's class probabilities, KID and
precision/recall against the reference features themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .io import load_arrays
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
    def load(cls, path: str | Path) -> Reference:
        """The reference saved by ``train_evaluator`` (`arrays`); another kind of file is an ArtifactError."""
        arrays = load_arrays(path)[0]
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})

    @classmethod
    def from_features(cls, features: np.ndarray) -> Reference:
        mu, sigma = feature_statistics(features)
        return cls(np.asarray(features, np.float64), mu, sigma, sqrtm_psd(sigma))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

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

    def kid_size(self, n: int, n_ref: int) -> int:
        """KID's subset size for n samples against n_ref reference features: at most either."""
        return min(self.kid_subset_size, n, n_ref)


def score(features: np.ndarray, probs: np.ndarray | None, ref: Reference, s: MetricSettings) -> dict[str, float]:
    """FID, IS, KID (mean, std) and precision/recall of features (N, D) [and probs (N, K)] against ``ref``."""
    out = {"fid": ref.fid(features)}
    if probs is not None:
        out["is_mean"], out["is_std"] = inception_score(probs, s.is_splits)
    out["kid_mean"], out["kid_std"] = kernel_inception_distance(
        ref.features, features, s.kid_subsets, s.kid_size(len(features), len(ref.features)),
        rng=np.random.RandomState(s.seed % 2**32),
    )
    out["precision"], out["recall"] = precision_recall(ref.features, features, k=s.pr_k)
    return out


# --- class-conditional samples: do they show the class asked for, and how good is each class? ------


def class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose most probable class (probs (N, K)) is their label (N,)."""
    return float((np.asarray(probs).argmax(axis=1) == np.asarray(labels)).mean())


def class_metrics(
    labels: np.ndarray, features: np.ndarray, probs: np.ndarray, ref: Reference, ref_labels: np.ndarray,
    ref_probs: np.ndarray, floor_features: np.ndarray, floor_labels: np.ndarray, names: list[str],
) -> dict:
    """Class accuracy and per-class FID of class-conditional samples, each beside what real images score.

    labels (N,): the class each sample was asked for; features (N, D), probs (N, K): the evaluator's.
    ref: the real validation features (M, D) with their labels (M,) and probabilities (M, K).
    floor_features (F, D), floor_labels (F,): held-out real images, as many per class as samples.
    Only the classes drawn count. ``class_accuracy_real`` is the evaluator's accuracy on the real
    validation images of those classes: the ceiling of ``class_accuracy``. Per class k (by name):
    the accuracy, and the FID of its samples against its real validation images beside the same for the
    held-out real images of class k (the floor; FID is biased upwards at small n, so only this pair
    compares); None where either side has fewer than 2 images (no covariance), and a floor of fewer
    held-out images than samples is None too.
    """
    drawn = np.unique(labels)
    seen = np.isin(ref_labels, drawn)
    out: dict = {
        "class_accuracy": class_accuracy(probs, labels),
        "class_accuracy_real": class_accuracy(ref_probs[seen], ref_labels[seen]),
        "class_accuracy_per_class": {}, "fid_per_class": {}, "fid_per_class_real_floor": {}, "n_per_class": {},
    }  # fmt: skip
    for k in drawn:
        name, mine, real = names[k], labels == k, ref.features[ref_labels == k]
        class_ref = Reference.from_features(real) if len(real) >= 2 else None
        floor = floor_features[floor_labels == k]
        out["n_per_class"][name] = int(mine.sum())
        out["class_accuracy_per_class"][name] = class_accuracy(probs[mine], labels[mine])
        out["fid_per_class"][name] = class_ref.fid(features[mine]) if class_ref and mine.sum() >= 2 else None
        same_n = len(floor) == mine.sum() >= 2  # the train split may hold fewer of a class than were sampled
        out["fid_per_class_real_floor"][name] = class_ref.fid(floor) if class_ref and same_n else None
    return out


def per_class_subset(labels: np.ndarray, counts: dict[int, int], rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``labels`` (N,) with counts[k] rows of each class k
    (all rows of a class that has fewer)."""
    picked = [rng.permutation(np.flatnonzero(labels == k))[:n] for k, n in sorted(counts.items())]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)

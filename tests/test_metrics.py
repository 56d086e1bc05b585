"""FID, IS, KID, precision/recall: analytic cases, independent references, batch-size invariance.

The cross-checks against pytorch-fid, torch-fidelity and torchmetrics are in test_metrics_reference.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from scipy.spatial.distance import cdist

from ldmpipe.metrics import (
    extract,
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2,
    precision_recall,
    sqrtm_psd,
)
from ldmpipe.models.classifier import Classifier


def random_cov(rng, d, n=None):
    a = rng.standard_normal((n or 2 * d, d))
    return a.T @ a / len(a)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), random_cov(rng, 16)
    threads = torch.get_num_threads()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    assert torch.get_num_threads() == threads  # the single-threaded eigensolver restores the setting


def test_equal_covariances_give_squared_mean_difference():
    rng = np.random.default_rng(1)
    mu1, mu2, sigma = rng.standard_normal(8), rng.standard_normal(8), random_cov(rng, 8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)


def test_tiny_negative_result_is_not_clipped():
    """sqrt(S1) overestimated by 1e-10 (as rounding could) makes the exact value -2e-10 tr(S): kept, not 0."""
    rng = np.random.default_rng(5)
    mu, sigma = rng.standard_normal(16), random_cov(rng, 16)
    fid = frechet_distance(mu, sigma, mu, sigma, sqrt_sigma1=(1 + 1e-10) * sqrtm_psd(sigma))
    assert fid < 0
    assert fid == pytest.approx(-2e-10 * np.trace(sigma), rel=1e-3)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("d", [4, 64])
def test_matches_scipy_sqrtm_reference(d):
    """The textbook formula with scipy's general sqrtm (as pytorch-fid computes it)."""
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=sqrtm_psd(s1)) == pytest.approx(ref, rel=1e-6)


def test_sqrtm_psd_of_singular_matrix():
    rng = np.random.default_rng(2)
    s = random_cov(rng, 32, n=8)  # rank 8
    r = sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, atol=1e-10)
    np.testing.assert_allclose(r, r.T)


def test_feature_statistics_are_float64_unbiased():
    f = np.random.default_rng(3).standard_normal((100, 5)).astype(np.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False))


def test_inception_score_bounds():
    k = 5
    uniform = np.full((100, k), 1 / k)
    assert inception_score(uniform, splits=10) == pytest.approx((1.0, 0.0))
    confident = np.eye(k)[np.arange(100) % k]  # each split holds every class equally
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 10 samples"):
        inception_score(uniform[:5], splits=10)


def test_inception_score_std_is_population_std():
    """Split 1 uniform (score 1), split 2 confident over k classes (score k): std (k - 1) / 2 with ddof=0."""
    k = 4
    probs = np.concatenate([np.full((k, k), 1 / k), np.eye(k)])
    mean, std = inception_score(probs, splits=2)
    assert mean == pytest.approx((1 + k) / 2, rel=1e-12)
    assert std == pytest.approx((k - 1) / 2, rel=1e-12)


def test_inception_score_splits_like_salimans():
    """Chunk i is rows [i N // s, (i + 1) N // s): with N = 11, s = 2 the chunks are 5 and 6 rows."""
    probs = np.random.default_rng(6).dirichlet(np.ones(3), size=11)

    def score(p):  # exp(E_x KL(p(y|x) || p(y))), written out
        return np.exp(np.mean([np.sum(q * np.log(q / p.mean(axis=0))) for q in p]))

    scores = [score(probs[:5]), score(probs[5:])]
    assert inception_score(probs, splits=2) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)


def mmd2_by_definition(x, y, degree=3):
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^degree, by explicit sums over pairs."""
    k = lambda a, b: (a @ b / x.shape[1] + 1) ** degree  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_polynomial_mmd2_matches_definition():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((9, 5)) + 0.5
    assert polynomial_mmd2(x, y) == pytest.approx(mmd2_by_definition(x, y), rel=1e-12)
    assert polynomial_mmd2(x, y, degree=2) == pytest.approx(mmd2_by_definition(x, y, degree=2), rel=1e-12)


def test_kid_is_mean_and_population_std_over_subsets():
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((40, 6)), rng.standard_normal((30, 6)) * 1.5
    mean, std = kernel_inception_distance(real, fake, subsets=5, subset_size=10, rng=np.random.RandomState(3))
    draw = np.random.RandomState(3)
    mmds = [polynomial_mmd2(real[draw.choice(40, 10, replace=False)], fake[draw.choice(30, 10, replace=False)])
            for _ in range(5)]  # fmt: skip
    assert (mean, std) == pytest.approx((np.mean(mmds), np.std(mmds)), rel=1e-12)
    assert kernel_inception_distance(real, fake, 5, 10, rng=3) == (mean, std)  # an int seeds RandomState
    assert mean > 0


def test_kid_of_same_distribution_is_near_zero_and_can_be_negative():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    mean, std = kernel_inception_distance(real, fake, subsets=20, subset_size=100, rng=np.random.default_rng(0))
    assert abs(mean) < 3 * std / np.sqrt(20) + 1e-3
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(real, fake[:50], subsets=2, subset_size=100)


def precision_recall_brute_force(real, fake, k):
    """Kynkäänniemi et al. 2019, eqs. 1-3, with explicit distance matrices."""
    def radii(x):  # distance to the k-th nearest other point
        return np.sort(cdist(x, x), axis=1)[:, k]

    precision = np.mean([np.any(cdist(f[None], real)[0] <= radii(real)) for f in fake])
    recall = np.mean([np.any(cdist(r[None], fake)[0] <= radii(fake)) for r in real])
    return precision, recall


@pytest.mark.parametrize("k, offset", [(1, 100.0), (3, 100.0), (5, 100.0), (3, 1e7)])
def test_precision_recall_matches_brute_force(k, offset):
    """Far from the origin (offset 1e7), |a|^2 + |b|^2 - 2 a.b is accurate only on centred features."""
    rng = np.random.default_rng(10 + k)
    real = rng.standard_normal((120, 16)) + offset
    fake = rng.standard_normal((90, 16)) * 0.8 + offset + 0.8
    expected = precision_recall_brute_force(real, fake, k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    assert precision_recall(real, fake, k=k) == pytest.approx(expected, abs=1e-12)
    assert precision_recall(real, fake, k=k, batch_size=7) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_analytic_cases():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, 4))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    # a collapsed generator: every fake sample at one real point -> full precision, tiny recall
    precision, recall = precision_recall(x, np.repeat(x[:1], 50, axis=0))
    assert precision == 1.0 and recall <= 0.1


def test_features_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    clf = Classifier(3, 5, 8, 16).eval()
    images = np.random.default_rng(4).integers(0, 256, (37, 16, 16, 3), dtype=np.uint8)
    f1, p1 = extract(clf.features, clf.head, images, 37, torch.device("cpu"))
    f2, p2 = extract(clf.features, clf.head, images, 5, torch.device("cpu"))
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-7)
    assert f1.dtype == np.float64 and p1.shape == (37, 5)

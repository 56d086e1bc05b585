"""FID and IS: analytic cases, an independent reference, batch-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ldmpipe.metrics import extract, feature_statistics, frechet_distance, inception_score, sqrtm_psd
from ldmpipe.models.classifier import Classifier


def random_cov(rng, d, n=None):
    a = rng.standard_normal((n or 2 * d, d))
    return a.T @ a / len(a)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), random_cov(rng, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_equal_covariances_give_squared_mean_difference():
    rng = np.random.default_rng(1)
    mu1, mu2, sigma = rng.standard_normal(8), rng.standard_normal(8), random_cov(rng, 8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)


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


def test_features_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    clf = Classifier(3, 5, 8, 16).eval()
    images = np.random.default_rng(4).integers(0, 256, (37, 16, 16, 3), dtype=np.uint8)
    f1, p1 = extract(clf.features, clf.head, images, 37, torch.device("cpu"))
    f2, p2 = extract(clf.features, clf.head, images, 5, torch.device("cpu"))
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-7)
    assert f1.dtype == np.float64 and p1.shape == (37, 5)

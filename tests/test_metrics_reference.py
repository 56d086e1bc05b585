"""Cross-checks on the same random features and probabilities against the reference libraries.

pytorch-fid, torch-fidelity and torchmetrics are test-only dependencies (the ``dev`` extra); each
test is skipped where its library is missing.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ldmpipe.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2,
    precision_recall,
    sqrtm_psd,
)


def feature_sets(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Two non-Gaussian, correlated, non-negative feature sets (like pool3 activations), float64 (n, d)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = np.abs(rng.standard_normal((n, d)) @ mix)
    fake = np.abs(rng.standard_normal((n, d)) @ (mix + 0.2 * rng.standard_normal((d, d)) / np.sqrt(d))) + 0.05
    return real, fake


@pytest.fixture(scope="module", params=[32, 256])
def stats(request):
    real, fake = feature_sets(request.param, 3 * request.param, request.param)
    return (*feature_statistics(real), *feature_statistics(fake))


def test_fid_matches_pytorch_fid(stats):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    with warnings.catch_warnings():  # scipy's sqrtm may warn about its deprecated ``disp`` argument
        warnings.simplefilter("ignore")
        expected = fid_score.calculate_frechet_distance(*stats)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)
    mu1, s1, mu2, s2 = stats
    assert frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=sqrtm_psd(s1)) == pytest.approx(expected, rel=1e-6)


def test_fid_matches_torch_fidelity(stats):
    metric_fid = pytest.importorskip("torch_fidelity.metric_fid")
    mu1, s1, mu2, s2 = stats
    expected = metric_fid.fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    assert frechet_distance(*stats) == pytest.approx(expected[metric_fid.KEY_METRIC_FID], rel=1e-6)


def test_fid_matches_torchmetrics(stats):
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    expected = tm_fid._compute_fid(*(torch.from_numpy(a) for a in stats)).item()  # float64 throughout
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n, splits", [(1000, 10), (1003, 10), (257, 4)])
def test_inception_score_matches_torch_fidelity(n, splits):
    metric_isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.from_numpy(np.random.default_rng(n).standard_normal((n, 50)) * 3.0)
    expected = metric_isc.isc_features_to_metric(logits, splits=splits, shuffle=False)
    ours = inception_score(torch.softmax(logits, dim=1).numpy(), splits=splits)
    ref = (expected[metric_isc.KEY_METRIC_ISC_MEAN], expected[metric_isc.KEY_METRIC_ISC_STD])
    assert ours == pytest.approx(ref, rel=1e-3)
    assert ours == pytest.approx(ref, rel=1e-9)  # in fact equal up to rounding


def test_kid_matches_torch_fidelity_on_identical_subsets():
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    real, fake = feature_sets(1, 300, 64)
    real, fake = real[:300], fake[:250]
    # torch-fidelity draws input 1 then input 2 per subset with RandomState(rng_seed); ours draws real then fake
    expected = metric_kid.kid_features_to_metric(
        torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=10, kid_subset_size=100, rng_seed=7, verbose=False
    )
    ours = kernel_inception_distance(real, fake, subsets=10, subset_size=100, rng=7)
    ref = (expected[metric_kid.KEY_METRIC_KID_MEAN], expected[metric_kid.KEY_METRIC_KID_STD])
    assert ref[0] > ref[1] > 0  # distinguishable sets and varying subsets: a meaningful comparison
    assert ours == pytest.approx(ref, rel=1e-6)


def test_mmd2_matches_torch_fidelity_and_torchmetrics():
    real, fake = feature_sets(2, 200, 48)
    ours = polynomial_mmd2(real, fake)
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    assert ours == pytest.approx(metric_kid.kernel_mmd(real, fake), rel=1e-6)
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    assert ours == pytest.approx(tm_kid.poly_mmd(torch.from_numpy(real), torch.from_numpy(fake)).item(), rel=1e-6)


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_matches_torch_fidelity(k):
    metric_prc = pytest.importorskip("torch_fidelity.metric_prc")
    real, fake = feature_sets(3, 300, 32)
    fake = fake[:240]
    # torch-fidelity's convention: features_1 is generated, features_2 is real
    expected = metric_prc.prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=k, verbose=False
    )
    ref = (expected[metric_prc.KEY_METRIC_PRECISION], expected[metric_prc.KEY_METRIC_RECALL])
    assert 0 < ref[0] < 1 and 0 < ref[1] < 1
    assert precision_recall(real, fake, k=k) == pytest.approx(ref, abs=1e-6)  # torch-fidelity's are float32

"""Feature extractors: the classifier, and the FID Inception network loaded from a local file.

No test downloads anything: the Inception weights file is created here with random values in the
architecture of pt_inception-2015-12-05-6726825d.pth.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ldmpipe.features import (
    INCEPTION_WEIGHTS_FILE,
    ClassifierExtractor,
    FeatureExtractor,
    InceptionExtractor,
    build_fid_inception,
    create_extractor,
    default_inception_weights_path,
)
from ldmpipe.metrics import feature_statistics, frechet_distance, precision_recall
from ldmpipe.models.classifier import Classifier


def random_images(seed: int, n: int, size: int = 32, channels: int = 3) -> np.ndarray:
    """uint8 (n, size, size, channels): noise of a different contrast per image."""
    noise = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels))
    return (noise // np.arange(1, n + 1)[:, None, None, None]).astype(np.uint8)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A state dict of the FID Inception architecture with random values: He-scaled convolutions and
    BatchNorm near identity, so that the features depend on the input."""
    g = torch.Generator().manual_seed(0)
    state = build_fid_inception().state_dict()
    for key, t in state.items():
        if key.endswith("conv.weight"):
            t.normal_(0.0, math.sqrt(2.0 / t[0].numel()), generator=g)
        elif key.endswith(("running_var", "bn.weight")):
            t.uniform_(0.8, 1.25, generator=g)
        elif t.is_floating_point():  # BatchNorm means and biases, the fc layer
            t.normal_(0.0, 0.05, generator=g)
    path = tmp_path_factory.mktemp("hub") / INCEPTION_WEIGHTS_FILE
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def inception(inception_file):
    return InceptionExtractor.from_weights(inception_file)


@pytest.fixture(scope="module")
def rgb_features(inception):
    images = random_images(0, 2)
    return images, inception(images, batch_size=2, device="cpu")


def test_inception_loads_the_file(inception, inception_file):
    saved = torch.load(inception_file, weights_only=True)
    loaded = inception.net.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert isinstance(inception, FeatureExtractor) and inception.name == "inception"


def test_inception_features_of_rgb_and_grayscale(inception, rgb_features):
    images, (feats, probs) = rgb_features
    assert feats.shape == (2, 2048) and feats.dtype == np.float64 and np.all(np.isfinite(feats))
    assert np.all(feats >= 0) and np.abs(feats[0] - feats[1]).mean() > 0.1 * feats.std()  # pool3 after ReLU
    assert probs.shape == (2, 1008) and probs.dtype == np.float64
    fc = inception.net.fc
    assert fc.bias.abs().max() > 0.01  # IS uses the logits without the fc bias, as torch-fidelity and the TF code
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(feats) @ fc.weight.double().T, 1), rtol=1e-5)
    gray = images[..., :1]
    gray_feats, _ = inception(gray, batch_size=2, device="cpu")
    assert gray_feats.shape == (2, 2048)
    same, _ = inception(np.repeat(gray, 3, axis=-1), batch_size=2, device="cpu")  # grayscale = gray RGB
    np.testing.assert_allclose(gray_feats, same, rtol=1e-6, atol=1e-7)


def test_inception_features_do_not_depend_on_batch_size(inception, rgb_features):
    images, (feats, probs) = rgb_features
    feats1, probs1 = inception(images, batch_size=1, device="cpu")
    np.testing.assert_allclose(feats1, feats, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs1, probs, rtol=1e-4, atol=1e-9)


def test_inception_preprocessing_follows_pytorch_fid():
    x = InceptionExtractor.preprocess(np.full((2, 8, 8, 1), 255, np.uint8))
    assert x.shape == (2, 3, 299, 299) and torch.allclose(x, torch.ones(()))
    images = random_images(1, 2, size=16)
    x01 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(InceptionExtractor.preprocess(images), 2 * expected - 1)
    large = random_images(2, 1, size=320)  # downsampling: no antialiasing, as pytorch-fid
    x01 = torch.from_numpy(large).permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(InceptionExtractor.preprocess(large), 2 * expected - 1)


def test_inception_matches_pytorch_fid_network(inception, inception_file, rgb_features, monkeypatch):
    """pytorch-fid's own InceptionV3 with the same weights (its download replaced by our file) gives our features."""
    pfid = pytest.importorskip("pytorch_fid.inception")
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: torch.load(inception_file, weights_only=True))
    net = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    images, (feats, _) = rgb_features
    with torch.no_grad():
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[0].flatten(1).double().numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)


def test_missing_inception_weights_raise_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / INCEPTION_WEIGHTS_FILE
    with pytest.raises(FileNotFoundError, match="pytorch-fid/releases/download") as err:
        InceptionExtractor.from_weights(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    assert default_inception_weights_path() == expected
    with pytest.raises(FileNotFoundError, match=str(expected)):
        create_extractor("inception")


def test_default_path_loads_from_the_hub_cache(inception_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE).symlink_to(inception_file)
    assert isinstance(create_extractor("inception"), InceptionExtractor)
    with pytest.raises(ValueError, match="1 or 3"):
        InceptionExtractor.preprocess(np.zeros((1, 8, 8, 4), np.uint8))


def test_importing_features_does_not_import_torchvision():
    code = "import sys, ldmpipe.features; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_classifier_extractor_and_metrics_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    extractor = create_extractor("classifier", classifier=Classifier(3, 5, 8, 16))
    assert isinstance(extractor, ClassifierExtractor) and isinstance(extractor, FeatureExtractor)
    real, fake = random_images(2, 40, size=16), random_images(3, 40, size=16) // 2
    (f_real, _), (f_fake, p_fake) = extractor(real, 40, "cpu"), extractor(fake, 40, "cpu")
    (g_real, _), (g_fake, q_fake) = extractor(real, 7, "cpu"), extractor(fake, 3, "cpu")
    np.testing.assert_allclose(g_fake, f_fake, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q_fake, p_fake, rtol=1e-5, atol=1e-7)
    fid = frechet_distance(*feature_statistics(f_real), *feature_statistics(f_fake))
    assert frechet_distance(*feature_statistics(g_real), *feature_statistics(g_fake)) == pytest.approx(fid, rel=1e-4)
    assert precision_recall(g_real, g_fake) == precision_recall(f_real, f_fake)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        create_extractor("clip")

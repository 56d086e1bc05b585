"""Autoencoder, UNet, evaluator and safetensors checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch

from ldmpipe.io import ArtifactError
from ldmpipe.models.checkpoint import load_model, save_model
from ldmpipe.models.classifier import Classifier, block_statistics, feature_size
from ldmpipe.models.unet import UNet
from ldmpipe.models.vae import AutoencoderKL, DiagonalGaussian


@pytest.mark.parametrize("downsample", [1, 2, 4, 8])
def test_vae_shapes(downsample):
    vae = AutoencoderKL(in_channels=3, channels=8, downsample=downsample, latent_channels=4)
    x = torch.randn(2, 3, 32, 32)
    q = vae.encode(x)
    assert q.mean.shape == (2, 4, 32 // downsample, 32 // downsample)
    assert vae.decode(q.mean).shape == x.shape


def test_kl_matches_closed_form_of_torch_distributions():
    moments = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    q = DiagonalGaussian(moments)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(torch.zeros_like(q.mean), 1.0)
    ).flatten(1).sum(1)  # fmt: skip
    torch.testing.assert_close(q.kl(), ref, rtol=1e-10, atol=1e-10)


def test_reparameterised_sample_passes_gradients():
    moments = torch.randn(2, 8, 4, 4, requires_grad=True)
    DiagonalGaussian(moments).sample(torch.randn(2, 4, 4, 4)).sum().backward()
    assert moments.grad is not None and moments.grad.abs().sum() > 0


@pytest.mark.parametrize("mult, attn", [((1, 2), (4,)), ((1, 2, 2), (2, 4)), ((1,), ())])
def test_unet_predicts_noise_shaped_output(mult, attn):
    unet = UNet(in_channels=4, sample_size=8, channels=16, channel_mult=mult, num_res_blocks=2, attention_resolutions=attn)
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([0, 10, 999])
    assert unet(x, t).shape == x.shape


def test_unet_depends_on_timestep():
    torch.manual_seed(0)
    unet = UNet(4, 8, 16, (1, 2), 1, (4,))
    torch.nn.init.normal_(unet.out[-1].weight)  # the output layer starts at zero
    x = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(unet(x, torch.tensor([1])), unet(x, torch.tensor([500])))


def test_classifier_features_and_logits():
    clf = Classifier(in_channels=1, num_classes=10, channels=8, feature_dim=32)
    x = torch.randn(5, 1, 28, 28)
    assert clf.features(x).shape == (5, 32)
    torch.testing.assert_close(clf(x), clf.head(clf.features(x)))


def test_checkpoint_round_trip_keeps_config_and_outputs(tmp_path):
    torch.manual_seed(0)
    unet = UNet(4, 8, 16, (1, 2), 1, (4,)).eval()
    torch.nn.init.normal_(unet.out[-1].weight)
    save_model(unet, tmp_path / "m.safetensors", extra={"scale_factor": 0.5})
    loaded, extra = load_model(UNet, tmp_path / "m.safetensors")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 7])
    assert torch.equal(loaded(x, t), unet(x, t)) and extra == {"scale_factor": 0.5}
    assert loaded.config == unet.config


def test_checkpoint_bytes_are_deterministic(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(3, 8, 4, 4)
    save_model(vae, tmp_path / "a.safetensors")
    save_model(vae, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_checkpoint_of_the_wrong_kind_is_refused(tmp_path):
    save_model(Classifier(3, 5, 8, 16), tmp_path / "clf.safetensors")
    with pytest.raises(ArtifactError, match="clf.safetensors: expected a UNet checkpoint, found 'Classifier'"):
        load_model(UNet, tmp_path / "clf.safetensors")


def test_checkpoint_that_does_not_fit_its_config_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "vae.safetensors"
    save_model(AutoencoderKL(3, 8, 4, 4), path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state.pop(next(iter(state)))
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ArtifactError, match=r"vae.safetensors: weights do not match AutoencoderKL\("):
        load_model(AutoencoderKL, path)


def test_pickle_is_never_executed(tmp_path):
    """A malicious pickle where a checkpoint is expected is refused without running anything."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ArtifactError, match="model.safetensors: not a readable safetensors checkpoint"):
        load_model(UNet, path)
    assert not marker.exists()
    with pytest.raises(ArtifactError, match="missing.safetensors: checkpoint not found"):
        load_model(UNet, tmp_path / "missing.safetensors")


@pytest.mark.parametrize("stat_blocks", [0, 1, 2])
def test_classifier_fid_features_are_top_features_then_block_statistics(stat_blocks):
    torch.manual_seed(0)
    clf = Classifier(3, 5, channels=4, feature_dim=6, stat_blocks=stat_blocks).eval()
    x = torch.randn(3, 3, 16, 16)
    f = clf.features(x)
    assert f.shape == (3, feature_size(4, 6, stat_blocks)) == (3, 6 + 2 * (0, 4, 12)[stat_blocks])
    torch.testing.assert_close(clf(x), f[:, :6] @ clf.head.weight.T + clf.head.bias)  # the head reads the top features
    a = clf.body[0](x)  # block 1's output (3, 4, 16, 16), by hand: mean, then mean |a - 3x3 box mean|
    box = torch.stack([torch.nn.functional.pad(a, (1, 1, 1, 1))[:, :, i : i + 16, j : j + 16]
                       for i in range(3) for j in range(3)]).sum(0)  # fmt: skip
    count = torch.nn.functional.pad(torch.ones(1, 1, 16, 16), (1, 1, 1, 1))
    count = sum(count[:, :, i : i + 16, j : j + 16] for i in range(3) for j in range(3))  # 4, 6 or 9 neighbours
    if stat_blocks:
        torch.testing.assert_close(f[:, 6:10], a.mean((2, 3)))
        torch.testing.assert_close(f[:, 10:14], (a - box / count).abs().mean((2, 3)))


def test_block_statistics_see_brightness_and_fine_noise():
    flat = torch.full((1, 2, 8, 8), 0.5)
    s = block_statistics(flat)
    assert torch.equal(s, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))  # flat: no local deviation, borders included
    noisy = block_statistics(flat + 0.01 * torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert (noisy[0, 2:] > 0.005).all()  # grows in proportion to the noise (a variance would be ~1e-4)


def test_standardise_z_scores_features_and_keeps_logits(tmp_path):
    torch.manual_seed(0)
    clf = Classifier(3, 5, channels=4, feature_dim=6, stat_blocks=1, standardise=True).eval()
    x, train = torch.randn(7, 3, 16, 16), torch.randn(40, 3, 16, 16)
    logits = clf(x)
    torch.testing.assert_close(clf.features(x), clf.raw_features(x))  # identity before standardise_
    clf.standardise_(clf.raw_features(train))
    z = clf.features(train).double()
    torch.testing.assert_close(z.mean(0), torch.zeros(14, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(14, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(clf(x), logits, atol=1e-5, rtol=1e-5)
    clf.standardise_(clf.raw_features(train[:20]))  # again, from other statistics: still the same logits
    torch.testing.assert_close(clf(x), logits, atol=1e-5, rtol=1e-5)
    save_model(clf, tmp_path / "clf.safetensors")
    loaded, _ = load_model(Classifier, tmp_path / "clf.safetensors")
    assert torch.equal(loaded.features(x), clf.features(x)) and loaded.config == clf.config
    with pytest.raises(ValueError, match="built with standardise=False"):
        Classifier(3, 5, 4, 6).standardise_(train[:, :, 0, :6])

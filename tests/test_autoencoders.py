"""VQ and KL autoencoders: straight-through gradients, codebook statistics, the KL term, the
latent scale factor, EMA/dead-code updates, the adversarial loss and loading either kind."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldmpipe.io import ArtifactError
from ldmpipe.models.autoencoder import build_autoencoder, load_autoencoder
from ldmpipe.models.checkpoint import save_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.models.discriminator import PatchDiscriminator
from ldmpipe.models.vae import AutoencoderKL
from ldmpipe.models.vq import AutoencoderVQ, VectorQuantizer, codebook_stats
from ldmpipe.stages.encode import latent_statistics, scale_factor
from ldmpipe.training.autoencoder import Adversary, adaptive_weight, autoencoder_loss, hinge_d_loss

VQ = dict(codebook_size=16, beta=0.25, ema=True, decay=0.9, dead_threshold=0.5)


def small_vq(**overrides) -> AutoencoderVQ:
    torch.manual_seed(0)
    return AutoencoderVQ(3, 8, 4, 4, **{**VQ, **overrides})


def test_straight_through_passes_the_decoders_gradient_to_the_encoder():
    vq = VectorQuantizer(8, 4, beta=0.25, ema=False, decay=0.99, dead_threshold=0.0)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q, _, idx = vq(z)
    # forward: exactly the nearest codes
    torch.testing.assert_close(q.detach(), vq.codebook.detach()[idx].permute(0, 3, 1, 2))
    # backward: the identity, dL/dz = dL/dq
    w = torch.randn_like(q)
    (q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)


def test_reconstruction_loss_reaches_the_encoder_weights():
    vae = small_vq()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon = vae.decoder(vae.quantize(vae.encode_latents(x))[0])
    torch.nn.functional.mse_loss(recon, x).backward()
    grads = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_codebook_usage_and_perplexity_on_a_constructed_case():
    # 4 codes; codes 0 and 2 used equally, 1 and 3 never: usage 1/2, perplexity 2
    stats = codebook_stats(torch.tensor([[0, 2], [2, 0]]), 4)
    assert stats["codebook_usage"] == 0.5 and stats["perplexity"] == pytest.approx(2.0, rel=1e-12)
    # one code takes everything: perplexity 1; uniform over all K: perplexity K
    assert codebook_stats(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)
    assert codebook_stats(torch.arange(8).repeat(3), 8) == pytest.approx({"codebook_usage": 1.0, "perplexity": 8.0})


def test_quantiser_finds_the_nearest_codes():
    vq = VectorQuantizer(3, 2, beta=0.25, ema=True, decay=0.99, dead_threshold=0.0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    z = torch.tensor([[9.0, 1.0], [1.0, 8.0], [0.5, -0.5], [9.0, 0.0]]).T.reshape(1, 2, 2, 2)  # (B, D, h, w)
    _, loss, idx = vq(z)
    assert idx.flatten().tolist() == [1, 2, 0, 1]
    assert codebook_stats(idx, 3) == pytest.approx({"codebook_usage": 1.0, "perplexity": math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))})
    assert loss.item() > 0


def test_kl_term_matches_the_closed_form_for_diagonal_gaussians():
    torch.manual_seed(0)
    vae = AutoencoderKL(3, 8, 4, 4).double()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    _, kl, _ = vae.forward_train(x, torch.Generator().manual_seed(0))
    q = vae.encode(x)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(kl, ref.flatten(1).sum(1).mean() / x[0].numel(), rtol=1e-10, atol=1e-12)


def test_scale_factor_gives_unit_std():
    spread = np.array([3.0, 0.5, 1.0, 7.0])[None, :, None, None]  # channels of very different scales
    z = (np.random.default_rng(0).standard_normal((200, 4, 8, 8)) * spread + 2.0).astype(np.float32)
    scale = scale_factor(z)
    assert float((z.astype(np.float64) * scale).std()) == pytest.approx(1.0, abs=1e-6)
    stats = latent_statistics(z, scale)
    assert stats["scaled_unit_std"] and stats["scaled_std"] == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(stats["scaled_channel_std"], np.array(stats["channel_std"]) * scale)
    assert not latent_statistics(z, 1.1 * scale)["scaled_unit_std"]  # 10% off: reported as not unit


def test_ema_update_moves_codes_to_their_means_and_dead_codes_are_reinitialised_deterministically():
    def step(seed: int) -> VectorQuantizer:
        torch.manual_seed(0)
        vq = VectorQuantizer(4, 2, beta=0.25, ema=True, decay=0.5, dead_threshold=0.5)
        vq.usage.fill_(1.0)  # all alive at first
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [100.0, 100.0]]))
        vq.embed_sum.copy_(vq.codebook)
        z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [9.0, 9.0], [11.0, 11.0], [-9.0, 9.0], [-11.0, 11.0]])
        z = z.T.reshape(1, 2, 2, 3)
        _, _, idx = vq(z)
        vq.update(z, idx, torch.Generator().manual_seed(seed))
        return vq, z

    vq, z = step(0)
    torch.testing.assert_close(vq.codebook[1], torch.tensor([10.0, 10.0]), atol=1e-3, rtol=0)  # mean of its two
    torch.testing.assert_close(vq.codebook[0], torch.tensor([2.0 / 3, 0.0]), atol=1e-3, rtol=0)  # (0 + 1 + 1) / 3
    # code 3 got nothing: its usage halves to 0.5, not below the threshold yet; a second step kills it
    assert vq.usage[3] == pytest.approx(0.5)
    _, _, idx = vq(z)
    vq.update(z, idx, torch.Generator().manual_seed(0))
    batch = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert any(torch.equal(vq.codebook[3], v) for v in batch)  # re-initialised from the batch
    assert vq.usage[3] == pytest.approx(1.0)  # grace: twice the threshold
    vq2, z2 = step(0)
    _, _, idx2 = vq2(z2)
    vq2.update(z2, idx2, torch.Generator().manual_seed(0))
    assert torch.equal(vq.codebook, vq2.codebook)  # same seed, same codes


def test_vq_training_step_updates_the_codebook_and_checkpoint_round_trips(tmp_path):
    vae = small_vq().train()
    before = vae.quantizer.codebook.clone()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    recon, loss, logs = vae.forward_train(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and loss.item() > 0 and 1.0 <= logs["perplexity"] <= 16
    assert not torch.equal(before, vae.quantizer.codebook)  # first step: dead codes taken from the batch
    save_model(vae.eval(), tmp_path / "vq.safetensors")
    loaded = load_autoencoder(tmp_path / "vq.safetensors")
    assert isinstance(loaded, AutoencoderVQ)
    torch.testing.assert_close(loaded.decode_latents(loaded.encode_latents(x)), vae.decode_latents(vae.encode_latents(x)))


def test_load_autoencoder_builds_either_kind_and_refuses_others(tmp_path):
    save_model(build_autoencoder("kl", 3, 8, 4, 4), tmp_path / "kl.safetensors")
    assert isinstance(load_autoencoder(tmp_path / "kl.safetensors"), AutoencoderKL)
    save_model(Classifier(3, 5, 8, 16), tmp_path / "clf.safetensors")
    with pytest.raises(ArtifactError, match="expected an AutoencoderKL, AutoencoderVQ or PretrainedAutoencoderKL checkpoint, found 'Classifier'"):
        load_autoencoder(tmp_path / "clf.safetensors")


def test_hinge_loss_and_adaptive_weight():
    assert hinge_d_loss(torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])).item() == pytest.approx(0.5 * (0.25 + 0.5))
    w = torch.randn(3, requires_grad=True)
    rec, g = (w * torch.tensor([3.0, 0.0, 4.0])).sum(), (w * torch.tensor([0.0, 1.0, 0.0])).sum()
    assert adaptive_weight(rec, g, w).item() == pytest.approx(5.0 / (1.0 + 1e-4))


def test_discriminator_starts_after_disc_start_and_steps_its_own_optimiser():
    torch.manual_seed(0)
    vae = AutoencoderKL(3, 8, 4, 4).train()
    disc = PatchDiscriminator(3, channels=8)
    assert disc(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 6, 6)
    adv = Adversary(disc, torch.optim.AdamW(disc.parameters(), lr=1e-3), weight=0.5, start=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    before = [p.clone() for p in disc.parameters()]
    _, logs = autoencoder_loss(vae, x, torch.Generator().manual_seed(0), 1e-6, step=1, adv=adv)
    assert "d_loss" not in logs and all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    loss, logs = autoencoder_loss(vae, x, torch.Generator().manual_seed(0), 1e-6, step=2, adv=adv)
    assert {"g_loss", "d_loss", "adv_weight"} <= set(logs)
    assert not all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    d_grads = [p.grad.clone() for p in disc.parameters()]  # from the discriminator's own step
    loss.backward()  # the generator loss reaches the decoder, not the discriminator
    assert vae.last_layer.grad is not None and vae.last_layer.grad.abs().sum() > 0
    assert all(torch.equal(a, p.grad) for a, p in zip(d_grads, disc.parameters()))

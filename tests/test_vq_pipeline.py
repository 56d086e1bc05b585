"""The whole DAG with the VQ autoencoder (the KL one is the tiny config itself, in test_e2e.py).

Beyond running, the trained VQ autoencoder must work: its codes carry the image (reconstructions beat
trivial baselines and the same codes shuffled), it uses many codes (no collapse), the decoder
quantises (pre-quantisation latents decode exactly as their nearest codes), and the stored latents and
metrics are those of the checkpoint. Margins are measured on the tiny config (30 training steps).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import make_repo, ran_stages, sh
from ldmpipe.autoencoder_metrics import code_indices, recon_metrics, reconstruct
from ldmpipe.images import to_model_input, to_uint8
from ldmpipe.io import load_arrays
from ldmpipe.models.autoencoder import load_autoencoder
from ldmpipe.models.vq import AutoencoderVQ, codebook_stats

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("vq"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["vae"]["kind"] = "vq"
    # keep it short: one sweep entry and a 10-step reference row (test_e2e covers the sweep)
    params["sweep"].update(samplers=["ddim"], spacings=["leading"], reference_steps=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", repo))
    assert {"train_vae", "encode", "evaluate_vae", "train_diffusion", "sample", "evaluate", "report"} <= ran
    return repo


@pytest.fixture(scope="module")
def vae(repo) -> AutoencoderVQ:
    model = load_autoencoder(repo / "data/vae/model.safetensors")
    assert isinstance(model, AutoencoderVQ)
    return model.eval()


def images(repo: Path, split: str) -> np.ndarray:
    return load_arrays(repo / f"data/prepared/{split}.safetensors")[0]["images"]  # uint8 (N, H, W, C)


def test_vq_runs_end_to_end(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    ae = json.loads((repo / "reports/vae_metrics.json").read_text())
    assert ae["kind"] == "vq" and ae["codebook_size"] == params["vae"]["codebook_size"]
    assert all(math.isfinite(ae[k]) for k in ("val_mse", "val_psnr", "val_ssim", "rfid"))
    latents = json.loads((repo / "reports/encode.json").read_text())
    assert latents["scaled_unit_std"] and abs(latents["scaled_std"] - 1) <= 0.05
    assert math.isfinite(json.loads((repo / "reports/metrics.json").read_text())["fid"])
    report = (repo / "reports/report.md").read_text()
    assert "## Autoencoder" in report and "codebook usage" in report and "](figures/vae_latents.png)" in report


def test_metrics_are_those_of_the_checkpoint(repo, vae):
    """vae_metrics.json recomputed from the saved weights and the validation split."""
    ae = json.loads((repo / "reports/vae_metrics.json").read_text())
    val = images(repo, "val")
    assert ae["n_val"] == len(val)
    assert ae["val_mse"] == pytest.approx(recon_metrics(val, reconstruct(vae, val, "cpu"))["val_mse"], rel=1e-9)
    stats = codebook_stats(torch.from_numpy(code_indices(vae, val, "cpu")), vae.config["codebook_size"])
    assert ae["codebook_usage"] == pytest.approx(stats["codebook_usage"]) and ae["perplexity"] == pytest.approx(stats["perplexity"])
    report = (repo / "reports/report.md").read_text()
    assert f"{ae['codebook_usage']:.1%} of {ae['codebook_size']} codes / {ae['perplexity']:.1f}" in report
    assert f"{ae['val_mse']:.5f} / {ae['val_psnr']:.2f} dB" in report


def test_reconstructions_beat_trivial_baselines(repo, vae):
    """Measured (tiny config): MSE 0.037 against 0.048 for the mean training image, 0.061 for the same
    codes shuffled across positions and 0.064 for the most used code everywhere (untrained: 0.15)."""
    val, train = images(repo, "val"), images(repo, "train")
    mse = recon_metrics(val, reconstruct(vae, val, "cpu"))["val_mse"]  # = vae_metrics.json's (test above)
    mean_image = np.repeat(train.astype(np.float64).mean(0, keepdims=True).round().astype(np.uint8), len(val), 0)
    assert mse < 0.9 * recon_metrics(val, mean_image)["val_mse"]
    with torch.no_grad():
        _, idx = vae.quantize(vae.encode_latents(to_model_input(val)))  # (N, h, w)
        codebook = vae.quantizer.codebook  # (K, D)
        shuffled = idx.flatten()[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(0))]
        decoded = to_uint8(vae.decoder(codebook[shuffled.reshape(idx.shape)].permute(0, 3, 1, 2)))
        one_code = codebook[idx.flatten().mode().values].reshape(1, -1, 1, 1).expand(len(val), -1, *idx.shape[1:])
        collapsed = to_uint8(vae.decoder(one_code))
    assert mse < 0.75 * recon_metrics(val, decoded)["val_mse"]  # the codes carry where things are
    assert mse < 0.75 * recon_metrics(val, collapsed)["val_mse"]


def test_codebook_is_used_not_collapsed(repo, vae):
    """Measured: 42 of 64 codes, perplexity 14.9 on the validation split; a collapsed codebook has ~1."""
    ae = json.loads((repo / "reports/vae_metrics.json").read_text())
    assert ae["perplexity"] >= 8 and ae["codebook_usage"] * ae["codebook_size"] >= 16
    idx = code_indices(vae, images(repo, "train"), "cpu")  # (N, h, w)
    assert len(np.unique(idx)) >= 16  # the training split, too
    per_image = [len(np.unique(i)) for i in idx]  # codes differ within one image, not one code per picture
    assert np.median(per_image) >= 3


def test_decoder_quantises_the_pre_quantisation_latents(repo, vae):
    """The stored latents are the encoder's z_e (not codes); decoding them equals decoding their nearest
    codes, so a small step that keeps every nearest code changes nothing, and skipping the quantiser
    would change the picture."""
    val = images(repo, "val")
    stored = torch.from_numpy(load_arrays(repo / "data/latents/val.safetensors")[0]["latents"]).float()
    with torch.no_grad():
        z = vae.encode_latents(to_model_input(val))  # (N, D, h, w)
        torch.testing.assert_close(stored, z, rtol=0, atol=1e-6)
        codebook = vae.quantizer.codebook  # (K, D)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N h w, D)
        dist = torch.cdist(flat.double(), codebook.double())  # (N h w, K)
        nearest = dist.argmin(1)
        assert float(dist.min(1).values.median()) > 1e-3  # z_e are not codes themselves
        codes = codebook[nearest].reshape(z.shape[0], *z.shape[2:], -1).permute(0, 3, 1, 2)
        out = vae.decode_latents(z)
        torch.testing.assert_close(out, vae.decoder(codes), rtol=0, atol=1e-5)
        # a step a tenth of the way to the nearest code keeps every assignment: the same output
        torch.testing.assert_close(vae.decode_latents(z + 0.1 * (codes - z)), out, rtol=0, atol=1e-5)
        assert not torch.allclose(vae.decoder(z), out, atol=1e-3)

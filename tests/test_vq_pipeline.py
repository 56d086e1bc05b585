"""The whole DAG with the VQ autoencoder (the KL one is the tiny config itself, in test_e2e.py)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from conftest import make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e


def test_vq_runs_end_to_end(tmp_path):
    repo = make_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["vae"]["kind"] = "vq"
    params["sweep"]["samplers"] = ["ddim"]  # keep it short
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", repo))
    assert {"train_vae", "encode", "evaluate_vae", "train_diffusion", "sample", "evaluate", "report"} <= ran

    ae = json.loads((repo / "reports/vae_metrics.json").read_text())
    assert ae["kind"] == "vq" and ae["codebook_size"] == params["vae"]["codebook_size"]
    assert 0 < ae["codebook_usage"] <= 1 and 1 <= ae["perplexity"] <= ae["codebook_size"]
    assert all(math.isfinite(ae[k]) for k in ("val_mse", "val_psnr", "val_ssim", "rfid"))
    latents = json.loads((repo / "reports/encode.json").read_text())
    assert latents["scaled_unit_std"] and abs(latents["scaled_std"] - 1) <= 0.05
    assert math.isfinite(json.loads((repo / "reports/metrics.json").read_text())["fid"])
    report = (repo / "reports/report.md").read_text()
    assert "## Autoencoder" in report and "codebook usage" in report and "](figures/vae_latents.png)" in report

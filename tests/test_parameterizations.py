"""Every parameterisation, with and without Min-SNR-γ, trains and samples through the whole DAG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e

VARIANTS = [  # (prediction, loss weighting, zero terminal SNR); the tiny config itself is epsilon + min_snr
    ("sample", "min_snr", False),
    ("v_prediction", "min_snr", False),
    ("v_prediction", "none", True),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("parameterizations"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sweep"]["samplers"] = ["ddim", "heun"]  # keep the reruns short
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", repo)
    return repo


@pytest.mark.parametrize("prediction, weighting, zero_snr", VARIANTS)
def test_parameterization_runs_end_to_end(repo, prediction, weighting, zero_snr):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["diffusion"].update(prediction=prediction, loss_weighting=weighting, zero_terminal_snr=zero_snr)
    params["sample"]["spacing"] = "trailing" if zero_snr else "leading"  # trailing starts at the zero-SNR step
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", repo))
    assert {"train_diffusion", "sample", "evaluate", "report"} <= ran and "train_vae" not in ran
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("fid", "is_mean", "kid_mean", "precision", "recall"))
    summary = json.loads((repo / "reports/train_diffusion/metrics.json").read_text())
    assert math.isfinite(summary["loss"])
    assert f"prediction: {prediction}" in (repo / "reports/report.md").read_text()

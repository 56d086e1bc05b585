"""DVCLive curves written atomically and without timestamps; image grids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ldmpipe.plotting import image_grid, labelled_grid, pair_grid
from ldmpipe.tracking import live_logger, log_step


def log_run(directory):
    with live_logger(directory) as live:
        for step in (10, 20):
            log_step(live, step, {"loss": 1.0 / step, "lr": 0.1})
        live.summary["val_psnr"] = 30.0


def test_live_logger_writes_summary_and_curve(tmp_path):
    log_run(tmp_path / "live")
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["loss"] == pytest.approx(0.05) and summary["val_psnr"] == 30.0
    rows = (tmp_path / "live/plots/metrics/loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"] and rows[1].split("\t")[0] == "10"
    assert not (tmp_path / "live/plots/metrics/lr.tsv").exists()  # only the loss is a curve
    assert [p.name for p in tmp_path.iterdir()] == ["live"]  # the staging folder is gone


def test_live_logger_is_repeatable_and_atomic(tmp_path):
    log_run(tmp_path / "a")
    log_run(tmp_path / "b")
    for f in ("metrics.json", "plots/metrics/loss.tsv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    with pytest.raises(RuntimeError):
        with live_logger(tmp_path / "c") as live:
            log_step(live, 1, {"loss": 1.0})
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_grids_have_the_expected_size():
    images = np.zeros((10, 8, 8, 1), dtype=np.uint8)
    assert image_grid(images, ncol=5, scale=2, pad=2).size == (5 * 18 + 2, 2 * 18 + 2)
    assert pair_grid(images, images, ncol=5).size == (5 * 18 + 2, 4 * 18 + 2)
    assert pair_grid(images[:3], images[:3], ncol=5).size == (3 * 18 + 2, 2 * 18 + 2)  # fewer than a row
    labels = np.array([0, 1] * 5)
    assert labelled_grid(images, labels, ["a", "b", "c"], per_class=4).size == (4 * 18 + 2, 3 * 18 + 2)

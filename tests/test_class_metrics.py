"""Class accuracy, per-class FID with its floor, the guidance plot and the report's class sections,
on made-up features and rows (no model needed). The whole conditional pipeline: test_e2e_conditional.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from ldmpipe.config import load_params
from ldmpipe.evaluation import Reference, class_accuracy, class_metrics, per_class_subset
from ldmpipe.plotting import guidance_figure
from ldmpipe.stages.report_conditional import class_section, guidance_section

NAMES = ["circle", "square", "star"]


def clusters(labels: np.ndarray, rng: np.random.Generator, shift: float | np.ndarray = 0.0) -> np.ndarray:
    """Features (N, 4): unit Gaussians around 3 e_k for class k, each moved by ``shift`` (scalar or (N,)) along e_3."""
    centres = np.eye(4)[labels] * 3.0
    return centres + rng.normal(size=(len(labels), 4)) + np.asarray(shift)[..., None] * np.eye(4)[3]


def one_hot(labels: np.ndarray, k: int = 3) -> np.ndarray:
    return np.eye(k)[labels]


def test_class_accuracy_counts_argmax_hits():
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.2, 0.8]])
    assert class_accuracy(probs, np.array([0, 1, 1, 1])) == 0.75


def test_class_metrics_against_each_class_and_its_floor():
    rng = np.random.default_rng(0)
    ref_labels = np.repeat([0, 1, 2], 400)
    ref = Reference.from_features(clusters(ref_labels, rng))
    ref_probs = one_hot(ref_labels)
    ref_probs[0] = [0.0, 1.0, 0.0]  # the evaluator misses one real circle: the ceiling is below 1
    labels = np.array([0, 1] * 300)  # only circles and squares were asked for
    fake = clusters(labels, rng, shift=np.where(labels == 1, 2.0, 0.0))
    probs = one_hot(np.where(np.arange(600) % 10 == 0, 2, labels))  # every tenth sample looks like a star
    floor_labels = np.repeat([0, 1], 300)
    m = class_metrics(labels, fake, probs, ref, ref_labels, ref_probs, clusters(floor_labels, rng), floor_labels, NAMES)
    assert m["class_accuracy"] == pytest.approx(0.9)
    assert m["class_accuracy_real"] == pytest.approx(799 / 800)  # over the real circles and squares only
    assert set(m["fid_per_class"]) == {"circle", "square"} and m["n_per_class"] == {"circle": 300, "square": 300}
    assert m["class_accuracy_per_class"]["circle"] == pytest.approx(0.8)  # samples 0, 10, 20, ... are circles
    assert m["class_accuracy_per_class"]["square"] == pytest.approx(1.0)
    # circles are drawn like the real ones (FID near its floor); squares are shifted by 2: FID about 2^2 = 4 more
    assert m["fid_per_class"]["circle"] < 0.2 and m["fid_per_class_real_floor"]["circle"] < 0.2
    assert m["fid_per_class"]["square"] == pytest.approx(4.0, abs=0.6)
    assert m["fid_per_class_real_floor"]["square"] < 0.2


def test_per_class_fid_is_none_without_a_covariance_or_a_full_floor():
    rng = np.random.default_rng(1)
    ref_labels = np.array([0] * 50 + [1])  # one real square only
    ref = Reference.from_features(clusters(ref_labels, rng))
    labels = np.array([0] * 20 + [1] * 20)
    floor_labels = np.array([0] * 10 + [1] * 20)  # fewer held-out circles than circle samples
    m = class_metrics(labels, clusters(labels, rng), one_hot(labels), ref, ref_labels, one_hot(ref_labels),
                      clusters(floor_labels, rng), floor_labels, NAMES)  # fmt: skip
    assert m["fid_per_class"]["square"] is None and m["fid_per_class_real_floor"]["square"] is None
    assert m["fid_per_class"]["circle"] is not None and m["fid_per_class_real_floor"]["circle"] is None


def test_per_class_subset_is_seeded_and_counts_per_class():
    labels = np.array([0, 1, 2] * 10)
    a = per_class_subset(labels, {0: 3, 2: 5}, np.random.default_rng(0))
    assert np.array_equal(a, np.sort(a)) and np.bincount(labels[a], minlength=3).tolist() == [3, 0, 5]
    assert np.array_equal(a, per_class_subset(labels, {0: 3, 2: 5}, np.random.default_rng(0)))
    assert len(per_class_subset(labels, {1: 50}, np.random.default_rng(0))) == 10  # all there are


ROWS = pd.DataFrame({"guidance_scale": [0.0, 1.0, 1.5, 3.0], "nfe": [10, 10, 20, 20], "fid": [9.0, 6.0, 5.0, 7.5],
                     "class_accuracy": [0.2, 0.9, 0.97, 0.99], "is_mean": [3.0, 3.5, 3.6, 3.2]})  # fmt: skip


def test_guidance_figure_plots_both_views():
    left, right, acc = guidance_figure(ROWS, 0.995).axes  # acc: left's twin, created last
    assert list(left.get_lines()[0].get_ydata()) == [9.0, 6.0, 5.0, 7.5]
    assert list(acc.get_lines()[0].get_ydata()) == [0.2, 0.9, 0.97, 0.99]
    trade = right.get_lines()[0]
    assert list(trade.get_xdata()) == [0.2, 0.9, 0.97, 0.99] and list(trade.get_ydata()) == [9.0, 6.0, 5.0, 7.5]
    assert [t.get_text() for t in right.texts] == ["w=0", "w=1", "w=1.5", "w=3"]


def test_report_sections_mark_the_default_and_the_best_w(tmp_path):
    params = load_params(TINY)
    params = dataclasses.replace(params, sample=dataclasses.replace(params.sample, guidance_scale=3.0))
    ROWS.to_csv(tmp_path / "guidance.csv", index=False)
    rel = lambda p: p  # noqa: E731
    text = guidance_section(str(tmp_path / "guidance.csv"), "g.png", "grids.png", rel, params)
    assert "| **3 (default)** | 20 | 7.500 | 99.0% | 3.200 |" in text
    assert "| 1.5 | 20 | **5.000** | 97.0% | 3.600 |" in text and "Best FID: w =\n1.5 (5.000)" in text
    assert "![guidance](g.png)" in text and "![guidance grids](grids.png)" in text
    (tmp_path / "empty.csv").write_text(",".join(ROWS.columns) + "\n")  # an unconditional model's table
    assert guidance_section(str(tmp_path / "empty.csv"), "g.png", "grids.png", rel, params) == ""
    m = {"class_accuracy": 0.96, "class_accuracy_real": 1.0, "guidance_scale": 1.5, "nfe": 20,
         "n_per_class": {"circle": 5, "star": 5}, "class_accuracy_per_class": {"circle": 1.0, "star": 0.92},
         "fid_per_class": {"circle": 2.5, "star": None}, "fid_per_class_real_floor": {"circle": 1.25, "star": None}}  # fmt: skip
    text = class_section(m, ["star", "square", "circle"])  # label order, not metrics.json's sorted keys
    assert "**Class accuracy** 96.00%" in text and "is\n100.00%" in text and "two network passes per step" in text
    assert "| star | 5 | 92.0% | n/a | n/a |\n| circle | 5 | 100.0% | 2.500 | 1.250 |" in text and "square" not in text
    assert class_section({"fid": 3.0}, ["circle"]) == ""

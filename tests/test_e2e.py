"""The whole DAG on the tiny config, through `dvc repro` and `snakemake --cores 2`.

One module-scoped pair of temporary git repos: the DVC run is checked for its outputs, for
doing nothing the second time, for rerunning only what a `sample.*` change touches, and for
identical dvc.lock hashes from scratch; the Snakemake run must give the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import OUTPUTS, STAGES, TIMED, TIMED_STAGES, make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("dvc"))
    assert ran_stages(sh("dvc repro", repo)) == set(STAGES)
    return repo


@pytest.fixture(scope="module")
def snakemake_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("snakemake"))
    sh("snakemake --cores 2", repo)
    return repo


def test_dvc_repro_writes_every_output(dvc_repo):
    for p in OUTPUTS:
        assert (dvc_repo / p).is_file(), p
    metrics = json.loads((dvc_repo / "reports/metrics.json").read_text())
    for key in ("fid", "fid_real_floor", "is_mean", "is_std", "n_samples", "extractor"):
        assert key in metrics
    assert metrics["n_samples"] == 60 and metrics["extractor"] == "classifier"
    assert metrics["fid"] > 0 and metrics["fid_real_floor"] >= 0 and metrics["is_mean"] >= 1
    report = (dvc_repo / "reports/report.md").read_text()
    figures = ("dataset", "vae_reconstructions", "samples", "fid_vs_nfe", "losses")
    for fig in (f"figures/{f}.png" for f in figures):
        assert f"]({fig})" in report
    assert f"{metrics['fid_real_floor']:.3f}" in report and "sampler: ddim" in report
    assert (dvc_repo / "reports/figures/samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fid" in sh("dvc metrics show", dvc_repo)
    sweep = (dvc_repo / "reports/sweep.csv").read_text().splitlines()
    assert sweep[0] == "sampler,steps,nfe,fid,is_mean,seconds" and len(sweep) == 1 + 4 * 2
    heun = [line.split(",") for line in sweep if line.startswith("heun,")]
    assert [(int(r[1]), int(r[2])) for r in heun] == [(2, 3), (4, 7)]  # two evaluations per step but the last


def test_second_dvc_repro_does_nothing(dvc_repo):
    out = sh("dvc repro", dvc_repo)
    assert ran_stages(out) == set() and "up to date" in out


def lock_without_timings(repo: Path) -> dict:
    """dvc.lock without the sweep stages, whose outputs hold wall times."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: entry for name, entry in stages.items() if name not in TIMED_STAGES}


def test_snakemake_gives_the_same_bytes(dvc_repo, snakemake_repo):
    differ = [p for p in OUTPUTS if (dvc_repo / p).read_bytes() != (snakemake_repo / p).read_bytes()]
    assert set(differ) <= TIMED, sorted(set(differ) - TIMED)
    assert "Nothing to be done" in sh("snakemake --cores 2 -n", snakemake_repo)
    # dvc commit records the Snakemake outputs: the lock file equals the one `dvc repro` wrote
    sh("dvc commit -f", snakemake_repo)
    assert lock_without_timings(snakemake_repo) == lock_without_timings(dvc_repo)
    assert len(lock_without_timings(dvc_repo)) == len(STAGES) - len(TIMED_STAGES)


def test_rerun_from_scratch_gives_the_same_lock(dvc_repo):
    before = lock_without_timings(dvc_repo)
    assert ran_stages(sh("dvc repro --force", dvc_repo)) == set(STAGES)
    assert lock_without_timings(dvc_repo) == before


def test_sample_change_reruns_only_downstream(dvc_repo):
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(sh("dvc repro", dvc_repo)) == {"sample", "evaluate", "report"}


def test_snakemake_reruns_only_what_a_sample_change_touches(snakemake_repo):
    params = yaml.safe_load((snakemake_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (snakemake_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("snakemake --cores 2 -n", snakemake_repo)
    jobs = set(re.findall(r"^rule (\w+):$", out, flags=re.M)) - {"all"}
    assert jobs == {"sample", "evaluate", "report"}

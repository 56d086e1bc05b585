"""The Snakemake workflow on a cluster: the real submission path through the cluster-generic
executor (profiles/cluster-generic, whose submit script runs each jobscript in the background
here), and a dry run of the SLURM profile (SLURM itself cannot run here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DATED_ENV, OUTPUTS, ROOT, SNAKEMAKE_JOBS, TIMED, make_repo, sh

pytestmark = pytest.mark.e2e
GPU_RULES = {"train_vae", "encode", "train_evaluator", "evaluate_vae", "train_diffusion", "sample", "sweep", "sweep_reference",
             "evaluate", "guidance_sweep"}  # fmt: skip
RULES = {name.split("@")[0] for name in SNAKEMAKE_JOBS}


def cluster_repo(path: Path) -> Path:
    repo = make_repo(path)
    shutil.copytree(ROOT / "profiles", repo / "profiles")
    sh("git add -A && git commit -qm profiles", repo, DATED_ENV)  # both runs' reports name the same commit
    return repo


@pytest.mark.slow  # two whole tiny pipelines, one job submission per stage (minutes on 2 cores)
def test_cluster_generic_submits_every_rule_and_gives_the_local_bytes(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_cluster_generic")
    (tmp_path / "local").mkdir(), (tmp_path / "cluster").mkdir()
    local = cluster_repo(tmp_path / "local")  # the same files and commit, run without the profile
    sh("snakemake --cores 2", local)
    cluster = cluster_repo(tmp_path / "cluster")
    out = sh("snakemake --profile profiles/cluster-generic --max-threads 2 --jobs 2", cluster)
    submitted = (cluster / "logs/cluster/submit.log").read_text().splitlines()
    rules = {re.search(r" rule=(\w+) ", line).group(1) for line in submitted}
    assert rules == RULES, out[-3000:]
    assert len(submitted) == len(SNAKEMAKE_JOBS)  # one job per stage (matrix entries included; check is onstart)
    for line in submitted:
        rule = re.search(r" rule=(\w+) ", line).group(1)
        assert re.search(r"submitted \S+\.sh ", line) and " threads=" in line and " mem_mb=" in line
        assert (" gpu=0 " not in line) == (rule in GPU_RULES), line
    differ = [p for p in OUTPUTS if p not in TIMED and (local / p).read_bytes() != (cluster / p).read_bytes()]
    assert not differ, f"cluster-generic and local runs differ: {differ}"


def dry_run_jobs(output: str) -> dict[str, str]:
    """rule -> its `resources:` line in a dry run."""
    jobs, rule = {}, None
    for line in output.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and line.startswith("    resources: "):
            jobs[rule] = line.removeprefix("    resources: ")
    return jobs


def test_slurm_profile_dry_run_shows_what_gpu_rules_request():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    r = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "--forceall"],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = dry_run_jobs(r.stdout)
    assert set(jobs) >= RULES
    for rule in GPU_RULES:
        resources = dict(item.split("=", 1) for item in jobs[rule].split(", "))
        assert int(resources["gpu"]) >= 1 and int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, rule
        assert resources["slurm_partition"].startswith("CHANGE-ME") and resources["slurm_account"].startswith("CHANGE-ME")
    assert "gpu=" not in jobs["report"] or "gpu=0" in jobs["report"]


def test_every_rule_declares_its_resources():
    """A new stage must say what it asks of a cluster (resources.yaml's defaults are for light rules)."""
    declared = yaml.safe_load((ROOT / "resources.yaml").read_text())["rules"]
    assert set(declared) == RULES, f"resources.yaml names {sorted(set(declared) ^ RULES)} wrongly (missing or extra)"
    assert {r for r in RULES if str(declared[r].get("gpu", 0)) != "0"} == GPU_RULES


def test_the_snakefile_parses_for_a_cluster_without_a_core_count():
    """`--executor slurm -j N` gives no --cores: nothing may read workflow.cores while parsing."""
    pytest.importorskip("snakemake_executor_plugin_cluster_generic")
    r = subprocess.run([sys.executable, "-m", "snakemake", "--executor", "cluster-generic", "--cluster-generic-submit-cmd",
                        "false", "--jobs", "1", "--summary"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train_diffusion" in r.stdout

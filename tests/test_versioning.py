"""Versioned and comparable: run-cache, shared remotes (local folder and S3 on loopback),
Snakemake after `dvc pull`, queued experiments, plots across commits, `ldmpipe compare`.

One module-scoped repo runs the tiny pipeline once; the tests below build on it in order.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ENV, OUTPUTS, copy_run, ran_stages, sh

pytestmark = pytest.mark.e2e


def set_param(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tiny_run, tmp_path_factory) -> Path:
    repo = copy_run(tiny_run[0], tmp_path_factory.mktemp("versioned") / "repo")
    sh("dvc repro && git add -A && git commit -qm 'tiny run'", repo)
    return repo


def assert_same_outputs(a: Path, b: Path) -> None:
    assert [p for p in OUTPUTS if (a / p).read_bytes() != (b / p).read_bytes()] == []


def test_run_cache_restores_an_earlier_value_without_recomputing(repo):
    metrics = (repo / "reports/metrics.json").read_bytes()
    original = yaml.safe_load((repo / "params.yaml").read_text())["sample"]["steps"]
    ran = ran_stages(sh("dvc exp run -S sample.steps=3", repo))
    assert ran == {"check", "sample", "evaluate", "guidance_sweep", "report"}
    assert (repo / "reports/metrics.json").read_bytes() != metrics
    out = sh(f"dvc exp run -S sample.steps={original}", repo)
    assert ran_stages(out) == set()
    assert "Stage 'sample' is cached - skipping run" in out
    assert (repo / "reports/metrics.json").read_bytes() == metrics


def pull_into_fresh_clone(repo: Path, dest: Path, remote: str, env: dict = ENV) -> Path:
    sh(f"dvc push -r {remote}", repo, env)
    sh(f"git clone -q {repo} {dest}", dest.parent)
    sh(f"dvc pull -r {remote}", dest, env)
    assert "Data and pipelines are up to date" in sh("dvc status", dest, env)
    assert_same_outputs(repo, dest)
    return dest


def test_local_remote_then_snakemake_has_nothing_to_do(repo, tmp_path):
    sh(f"dvc remote add -d storage {tmp_path / 'remote'} && git add .dvc/config && git commit -qm remote", repo)
    clone = pull_into_fresh_clone(repo, tmp_path / "clone", "storage")
    # DVC does not keep modification times: one `--touch` pass tells Snakemake the outputs are current
    sh("snakemake --cores 1 --touch", clone)
    assert "Nothing to be done" in sh("snakemake --cores 1 -n", clone)


@pytest.fixture
def s3_server():
    pytest.importorskip("moto")
    pytest.importorskip("dvc_s3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_s3_remote_on_loopback(repo, tmp_path, s3_server):
    import boto3

    env = {**ENV, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="ldmpipe")  # fmt: skip
    sh("dvc remote add s3 s3://ldmpipe/cache && git add .dvc/config && git commit -qm 's3 remote'", repo)
    sh(f"dvc remote modify --local s3 endpointurl {s3_server}", repo)  # per machine, not in git
    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path)
    sh("dvc push -r s3", repo, env)
    sh(f"dvc remote modify --local s3 endpointurl {s3_server} && dvc pull -r s3", clone, env)
    assert "Data and pipelines are up to date" in sh("dvc status", clone, env)
    assert_same_outputs(repo, clone)


def test_queued_experiments(repo):
    for steps in (2, 4):
        sh(f"dvc exp run --queue -S sample.steps={steps}", repo)
    sh("dvc queue start -j 1", repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh("dvc queue status", repo)
        if not any(s in status for s in ("Queued", "Running")):
            break
        time.sleep(3)
    assert status.count("Success") >= 2, status
    rows = list(csv.DictReader(io.StringIO(sh("dvc exp show --csv", repo))))
    finished = {r["sample.steps"] for r in rows if r["Experiment"] and r["fid"] not in ("", "!")}
    assert {"2", "4"} <= finished, rows


def test_plots_diff_and_compare_across_commits(repo, tmp_path):
    # two commits that change metrics cheaply: sample.steps 3 (after the run-cache test above, restored from
    # the run-cache), then evaluate.pr_k, which reruns only evaluate and the report
    set_param(repo, "sample", "steps", 3)
    sh("dvc repro && git add -A && git commit -qm 'fewer sampling steps'", repo)
    set_param(repo, "evaluate", "pr_k", 5)
    assert ran_stages(sh("dvc repro", repo)) == {"check", "evaluate", "report"}
    sh("git add -A && git commit -qm 'precision and recall with k = 5'", repo)
    html = tmp_path / "plots"
    sh(f"dvc plots diff HEAD~1 HEAD~2 -o {html}", repo)
    page = (html / "index.html").read_text()
    assert "reports/train_diffusion/plots/metrics/loss.tsv" in page
    assert "HEAD~1" in page and "HEAD~2" in page
    assert "precision" in sh("dvc metrics diff HEAD~1", repo) and "fid" in sh("dvc metrics diff HEAD~2", repo)
    out = sh("ldmpipe compare HEAD~2 HEAD HEAD~1", repo)
    md = (repo / "reports/compare.md").read_text()
    for text in ("evaluate.pr_k", "sample.steps", "precision", "fid", "fid_real_floor", "HEAD~2"):
        assert text in md and text in out
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:]  # after the header
    assert rows == ["HEAD~2", "HEAD", "HEAD~1"]  # the named revisions only, in the order named
    bad = subprocess.run(["ldmpipe", "compare", "HEAD", "nosuchrev"], cwd=repo, capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nosuchrev" in bad.stderr, bad.stderr
    assert (repo / "reports/figures/compare_fid.png").read_bytes()[:4] == b"\x89PNG"
    default = sh("ldmpipe compare", repo)  # workspace, recent commits and experiments
    assert "workspace" in default

"""`dvc repro` under stress: a second `dvc repro` while one runs, and SIGKILL in the middle.

The second run is refused with DVC's lock message and corrupts nothing; a killed run resumes
from its last saved state when `dvc repro` is run again, with the same bytes as a run that was
never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ENV, make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e
MODEL = "data/diffusion/model.safetensors"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("interrupts"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(steps=200, checkpoint_every=3)  # long enough to be caught running
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git commit -qam 'longer training' && dvc repro encode", repo)
    return repo


def states(repo: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (repo / ".ldmpipe" / "resume").glob("train_diffusion-*.pt")}


def start(cmd: str, repo: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so a kill reaches DVC and the stage)."""
    return subprocess.Popen(f"exec {cmd}", shell=True, cwd=repo, env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for_state(repo: Path, proc: subprocess.Popen, before: dict[Path, int]) -> None:
    """Block until the training stage has saved a new resumable state (so it is mid-run)."""
    deadline = time.monotonic() + 300
    while not set(states(repo).items()) - set(before.items()):
        assert proc.poll() is None, f"finished before saving a state:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no resumable state after 300 s"
        time.sleep(0.05)


def test_second_repro_is_refused_while_one_runs(repo):
    before = states(repo)
    first = start("dvc repro train_diffusion", repo)
    wait_for_state(repo, first, before)
    second = subprocess.run("dvc repro", shell=True, cwd=repo, env=ENV, capture_output=True, text=True)
    # DVC's lock: the repo lock ("Unable to acquire lock") or, once the first run is inside a
    # stage, the per-file read/write lock that names the process holding it.
    assert second.returncode != 0
    err = " ".join(second.stderr.split())
    assert "Unable to acquire lock" in err or f"is being blocked by: (PID {first.pid}): " in err, second.stderr
    assert "Running stage" not in second.stdout
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    status = sh("dvc status train_diffusion", repo)
    assert "up to date" in status, status


def test_killed_repro_resumes_on_the_next_repro(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 1.1e-3  # params that DVC's run-cache has not seen: the stage must run
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("ldmpipe train-diffusion --latents data/latents/train.safetensors --model ref/model.safetensors "
       "--live ref/live --val-latents data/latents/val.safetensors --timestep-error ref/timestep_error.tsv "
       "--timestep-figure ref/timestep_error.png", repo)  # the uninterrupted run, outside DVC
    reference = (repo / "ref" / "model.safetensors").read_bytes()
    before = states(repo)
    run = start("dvc repro train_diffusion", repo)
    wait_for_state(repo, run, before)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (repo / MODEL).exists(), "DVC removes a stage's outputs before running it"
    out = sh("dvc repro train_diffusion", repo)
    assert "train_diffusion: resuming from step" in out and ran_stages(out) == {"train_diffusion"}, out
    assert (repo / MODEL).read_bytes() == reference
    for curve in ("metrics.json", "plots/metrics/loss.tsv"):
        assert (repo / "reports/train_diffusion" / curve).read_bytes() == (repo / "ref/live" / curve).read_bytes()
    assert not list((repo / ".ldmpipe" / "resume").iterdir()), "state is deleted once the stage succeeds"
    assert "up to date" in sh("dvc status train_diffusion", repo)

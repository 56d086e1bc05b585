"""Data-parallel training on CPU: two processes (torchrun, gloo) against one.

The global batch is the same for any number of processes and every sample gets the same noise,
so N=1 and N=2 train the same model up to the order of the gradient sums; two N=2 runs give the
same bytes; a 2-process run killed with SIGKILL resumes to the bytes of an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import ENV, TINY, write_params
from test_resume import ARGS, files, ldmpipe

pytestmark = pytest.mark.e2e
ENV2 = {**ENV, "OMP_NUM_THREADS": "1", "LDMPIPE_NUM_THREADS": "2"}  # 2 cores: 1 thread per process


def params_with(work: Path, name: str, **train) -> str:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(train)
    write_params(work / name, params)
    return name


def launch(work: Path, stage: str, out: str, params: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """``ldmpipe <stage> --params <params>`` in a new process (it starts torchrun when train.nproc > 1)."""
    cmd = [sys.executable, "-m", "ldmpipe", *ARGS[stage].format(out=out).split(), "--params", params]
    env = {**ENV2, "LDMPIPE_STATE_DIR": str(work / "state")}
    if popen:
        return subprocess.Popen(cmd, cwd=work, env=env, **popen)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def relative_distance(a: Path, b: Path) -> float:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    num = sum(float((wa[k].double() - wb[k].double()).pow(2).sum()) for k in wa)
    den = sum(float(wa[k].double().pow(2).sum()) for k in wa)
    return (num / den) ** 0.5


def curve(path: Path) -> list[tuple[int, float]]:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [(int(s), float(v)) for s, v in rows]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Prepared data, a VAE and latents of the tiny config (one process)."""
    work = tmp_path_factory.mktemp("ddp")
    write_params(work / "params.yaml", yaml.safe_load(TINY.read_text()))
    ldmpipe(work, "prepare --train d/train.safetensors --val d/val.safetensors --meta d/meta.json --preview d/p.png --metrics d/prepare.json")
    ldmpipe(work, ARGS["train_vae"].format(out="d/vae"))
    ldmpipe(work, "encode --vae d/vae/model.safetensors --train d/train.safetensors --val d/val.safetensors "
                  "--train-out d/latents.safetensors --val-out d/val_latents.safetensors --metrics d/encode.json")  # fmt: skip
    return work


def test_two_processes_train_the_one_process_model(work):
    two = params_with(work, "two.yaml", nproc=2)
    ldmpipe(work, ARGS["train_diffusion"].format(out="n1"))
    out = ok(launch(work, "train_diffusion", "n2a", two))
    assert "x 2 processes" in out
    ok(launch(work, "train_diffusion", "n2b", two))
    assert files(work / "n2a") == files(work / "n2b"), "two 2-process runs differ"
    assert relative_distance(work / "n1/model.safetensors", work / "n2a/model.safetensors") <= 1e-4
    one, two_ = curve(work / "n1/live/plots/metrics/loss.tsv"), curve(work / "n2a/live/plots/metrics/loss.tsv")
    assert [s for s, _ in one] == [s for s, _ in two_] and len(one) == 6
    assert max(abs(a - b) for (_, a), (_, b) in zip(one, two_)) <= 1e-3
    assert not (work / "n1/model.safetensors").read_bytes() == (work / "n2a/model.safetensors").read_bytes()


@pytest.mark.parametrize("stage", ["train_vae", "train_evaluator"])
def test_autoencoder_and_evaluator_train_data_parallel(work, stage):
    ldmpipe(work, ARGS[stage].format(out=f"{stage}-1"))
    ok(launch(work, stage, f"{stage}-2", params_with(work, "two.yaml", nproc=2)))
    assert relative_distance(work / f"{stage}-1/model.safetensors", work / f"{stage}-2/model.safetensors") <= 1e-4


def test_vq_codebook_updates_see_the_global_batch(work):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["vae"]["kind"] = "vq"
    write_params(work / "vq1.yaml", params)
    params["train"]["nproc"] = 2
    write_params(work / "vq2.yaml", params)
    ldmpipe(work, ARGS["train_vae"].format(out="vq1") + " --params vq1.yaml")
    ok(launch(work, "train_vae", "vq2", "vq2.yaml"))
    assert relative_distance(work / "vq1/model.safetensors", work / "vq2/model.safetensors") <= 1e-4


def test_killed_two_process_run_resumes_to_the_same_bytes(work):
    longer = params_with(work, "long.yaml", nproc=2, steps=60, checkpoint_every=3)
    ok(launch(work, "train_diffusion", "ref", longer))
    state = work / "state"
    run = launch(work, "train_diffusion", "out", longer, start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(state.glob("train_diffusion-*.pt")):  # mid-run: a resumable state is saved
        assert run.poll() is None, "finished before saving a state"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the launcher and both workers
    run.wait()
    assert not (work / "out/model.safetensors").exists()
    out = ok(launch(work, "train_diffusion", "out", longer))
    assert "train_diffusion: resuming from step" in out
    assert files(work / "out") == files(work / "ref")
    assert not list(state.iterdir()), "the state is deleted once the outputs are written"


def test_nproc_must_match_the_processes_started(work):
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "ldmpipe",
         *ARGS["train_diffusion"].format(out="bad").split()],
        cwd=work, env=ENV2, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0
    assert "train.nproc is 1 but 2 process(es) were started" in r.stderr
    two = params_with(work, "odd.yaml", nproc=2, batch_size=31)
    r = launch(work, "train_diffusion", "bad", two)
    assert r.returncode == 2 and r.stderr.strip() == "ldmpipe train-diffusion: error: train.batch_size must be divisible by train.nproc (2), got 31"
    # a missing input is reported once, before torchrun starts a worker per process
    cmd = [sys.executable, "-m", "ldmpipe", *ARGS["train_diffusion"].format(out="bad").split(), "--params",
           params_with(work, "two.yaml", nproc=2)]  # fmt: skip
    cmd[cmd.index("--latents") + 1] = "no/such.safetensors"
    r = subprocess.run(cmd, cwd=work, env=ENV2, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "ldmpipe train-diffusion: error: no/such.safetensors: file not found"
    # an error every worker meets (images given as latents): one line, not one per worker plus torchrun's log
    cmd[cmd.index("--latents") + 1] = "d/train.safetensors"
    r = subprocess.run(cmd, cwd=work, env=ENV2, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == (
        "ldmpipe train-diffusion: error: d/train.safetensors: has no metadata key 'scale_factor' "
        "(it holds 'classes'): not the file this step reads")  # fmt: skip

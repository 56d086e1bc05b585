"""Kill a training stage with SIGKILL, rerun it: it resumes and ends with the same bytes.

The kills are real (``tests/helpers/kill_at_step.py`` sends SIGKILL to its own process at a
chosen training step, or half-way through writing a file); the rerun is a plain ``ldmpipe``
command.  Every output (weights, DVCLive curves and summary, reference statistics) must be
byte-identical to an uninterrupted run, and nothing may be left half-written.
"""

from __future__ import annotations

import contextlib
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ENV, TINY, write_params
from ldmpipe.cli import main

HELPER = Path(__file__).parent / "helpers" / "kill_at_step.py"
EVERY = 3  # checkpoint_every in these tests; the tiny config trains each model for 30 steps
STEPS = 30
ARGS = {  # stage module -> ldmpipe arguments, outputs under {out}
    "train_diffusion": "train-diffusion --latents d/latents.safetensors --model {out}/model.safetensors --live {out}/live "
    "--val-latents d/val_latents.safetensors --timestep-error {out}/timestep_error.tsv --timestep-figure {out}/timestep_error.png",
    "train_vae": "train-vae --train d/train.safetensors --val d/val.safetensors --model {out}/model.safetensors "
    "--live {out}/live --grid {out}/grid.png",
    "train_evaluator": "train-evaluator --train d/train.safetensors --val d/val.safetensors "
    "--model {out}/model.safetensors --reference {out}/reference.safetensors --metrics {out}/metrics.json",
}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A separate process: the one that gets killed."""
    env = {**ENV, "LDMPIPE_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def ldmpipe(cwd: Path, line: str, expect: int = 0) -> tuple[str, str]:
    """Run ``ldmpipe`` in this process (no interpreter start-up); return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(cwd)
        mp.setenv("LDMPIPE_STATE_DIR", str(cwd / "state"))
        rc = main(line.split())
    assert rc == expect, err.getvalue()[-2000:]
    return out.getvalue(), err.getvalue()


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden leftovers included) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Prepared data, a trained VAE and latents; uninterrupted reference runs of each stage."""
    work = tmp_path_factory.mktemp("resume")
    params = yaml.safe_load(TINY.read_text())
    params["train"]["checkpoint_every"] = EVERY
    write_params(work / "params.yaml", params)
    ldmpipe(work, "prepare --train d/train.safetensors --val d/val.safetensors --meta d/meta.json --preview d/p.png --metrics d/prepare.json")
    ldmpipe(work, ARGS["train_vae"].format(out="d/vae"))
    ldmpipe(work, "encode --vae d/vae/model.safetensors --train d/train.safetensors --val d/val.safetensors "
                  "--train-out d/latents.safetensors --val-out d/val_latents.safetensors --metrics d/encode.json")  # fmt: skip
    for stage in ARGS:
        ldmpipe(work, ARGS[stage].format(out=f"ref/{stage}"))
    assert not (work / "state").exists() or not any((work / "state").iterdir()), "state must be deleted on success"
    return work


def kill_and_resume(work: Path, stage: str, head: list[str], name: str) -> str:
    """Kill ``stage`` as ``head`` says, rerun it, compare every output with the reference."""
    out = f"out/{stage}-{name}"
    killed = run([str(HELPER), *head, "--", *ARGS[stage].format(out=out).split()], work)
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr[-1000:]}"
    assert not (work / out / "model.safetensors").exists() or "output" in name
    stdout, _ = ldmpipe(work, ARGS[stage].format(out=out))
    assert files(work / out) == files(work / "ref" / stage), "resumed run differs from the uninterrupted one"
    assert not any((work / "state").iterdir()), "the resumable state must be deleted on success"
    return stdout


def expected_resume(kill_step: int) -> str:
    last = (kill_step - 1) // EVERY * EVERY
    return f"resuming from step {last} of {STEPS}" if last else ""


def test_diffusion_resumes_bit_identically_after_kills_at_random_steps(work):
    points = sorted(random.sample(range(2, STEPS + 1), 3))
    for k in points:
        stdout = kill_and_resume(work, "train_diffusion", [str(k), "train_diffusion"], f"step{k}")
        assert expected_resume(k) in stdout, f"kill points {points}: at {k}: {stdout}"


@pytest.mark.slow
def test_diffusion_resumes_after_ten_kills(work):
    points = sorted(random.sample(range(2, STEPS + 1), 10))
    for k in points:
        stdout = kill_and_resume(work, "train_diffusion", [str(k), "train_diffusion"], f"slow{k}")
        assert expected_resume(k) in stdout, f"kill points {points}: at {k}: {stdout}"


@pytest.mark.parametrize("stage", ["train_vae", "train_evaluator"])
def test_every_training_stage_resumes(work, stage):
    k = random.randrange(EVERY + 1, STEPS + 1)
    stdout = kill_and_resume(work, stage, [str(k), stage], f"step{k}")
    assert expected_resume(k) in stdout, f"killed at {k}: {stdout}"


def test_kill_while_saving_state_keeps_the_previous_state(work):
    """Killed half-way through the second state write: the first state (step 3) is intact."""
    stdout = kill_and_resume(work, "train_diffusion", ["save", "2"], "save2")
    assert f"resuming from step {EVERY} of {STEPS}" in stdout


def test_kill_while_writing_an_output_leaves_no_truncated_file(work):
    """SIGKILL half-way through writing the weights: the final name never holds a partial file;
    the leftover temporary is removed by the rerun, which resumes from the last state."""
    out = work / "out" / "output-kill"
    args = ARGS["train_diffusion"].format(out="out/output-kill").split()
    killed = run([str(HELPER), "output", "model.safetensors", "--", *args], work)
    assert killed.returncode == -9, killed.stderr[-1000:]
    left = files(out)
    assert "model.safetensors" not in left
    assert any(name.startswith(".model.") for name in left), f"the kill should hit the write: {sorted(left)}"
    stdout, _ = ldmpipe(work, " ".join(args))
    assert f"resuming from step {(STEPS - 1) // EVERY * EVERY} of {STEPS}" in stdout
    assert files(out) == files(work / "ref" / "train_diffusion")


def test_nan_loss_names_the_step_and_the_last_good_state(work):
    params = yaml.safe_load((work / "params.yaml").read_text())
    # Adam steps are about lr in size: weights of ~1e25 overflow float32 once the loss squares them
    params["train"].update(lr=1e25, checkpoint_every=1, warmup_steps=0, grad_clip=1e30)
    write_params(work / "nan.yaml", params)
    _, stderr = ldmpipe(work, ARGS["train_diffusion"].format(out="out/nan") + " --params nan.yaml", expect=1)
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("ldmpipe train-diffusion: error: loss is "), stderr[-2000:]
    assert "last good state:" in line
    step = int(line.split(" at step ")[1].split(";")[0])
    path = Path(line.split("last good state: ")[1].split(" (step")[0])
    saved = int(line.split(" (step ")[1].split(")")[0])
    assert saved == step - 1 and (work / path).is_file()
    state = torch.load(work / path, weights_only=True)
    assert state["step"] == saved
    assert all(torch.isfinite(v).all() for v in state["objects"]["model"].values())
    assert not (work / "out" / "nan" / "model.safetensors").exists()
    (work / path).unlink()


def test_the_mps_generator_is_saved_and_restored(monkeypatch):
    """On a Mac the global RNG that dropout draws from is the MPS generator's; a resume restores it (faked
    here: no MPS on our machines), and a state saved without it still loads."""
    from ldmpipe.training.resume import rng_state, set_rng_state

    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: generator["state"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: generator.update(state=s.clone()))
    saved = rng_state()
    generator["state"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # the run draws on
    set_rng_state(saved)
    assert generator["state"].tolist() == [1, 2, 3]
    set_rng_state({"cpu": saved["cpu"]})  # a state from a machine without MPS
    assert generator["state"].tolist() == [1, 2, 3]

"""``vae.kind: pretrained``: a diffusers AutoencoderKL from a local folder, offline.

A tiny random AutoencoderKL (f = 4, 4 latent channels, as the tiny config) is saved with
``save_pretrained``; the checks refuse hub names and folders that do not fit; the tiny DAG (one sweep
entry) runs under HF_HUB_OFFLINE=1 through ``report``: train_vae copies the weights bit for bit,
encode scales by 1 / std, samples are decoded with it, and ``ldmpipe export`` of the run gives a
pipeline whose DDIM latents equal ours within 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ENV, ROOT, make_repo, ran_stages, sh, write_params

diffusers = pytest.importorskip("diffusers")

from ldmpipe.cli import main  # noqa: E402
from ldmpipe.models.pretrained import WEIGHTS, PretrainedAutoencoderKL  # noqa: E402

HELPER = ROOT / "tests" / "helpers" / "sample_exported.py"
SEEDS = [5, 6, 7]


def save_tiny_autoencoder(folder: Path, **overrides) -> Path:
    """A random diffusers AutoencoderKL: 3 blocks (f = 4), 4 latent channels, 32x32 RGB; saved as safetensors."""
    torch.manual_seed(0)
    cfg = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
               up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
               latent_channels=4, norm_num_groups=8, sample_size=32)  # fmt: skip
    cfg.update(overrides)
    safe = cfg.pop("safe", True)
    if len(cfg["block_out_channels"]) != 3:
        n = len(cfg["block_out_channels"])
        cfg.update(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)
    diffusers.AutoencoderKL(**cfg).save_pretrained(folder, safe_serialization=safe)
    return folder


def pretrained_params(tiny_params: dict, folder: Path | str) -> dict:
    tiny_params["vae"].update(kind="pretrained", pretrained=str(folder))
    return tiny_params


def refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- validation: cheap, no pipeline run ---------------------------------------------------------------


def test_check_accepts_a_folder_that_fits(tmp_path, tiny_params):
    folder = save_tiny_autoencoder(tmp_path / "vae")
    assert main(["check", str(write_params(tmp_path / "p.yaml", pretrained_params(tiny_params, folder)))]) == 0


BAD = [  # (what to save, or a name; vae.* edits; expected message)
    ("stabilityai/sd-vae-ft-mse", {}, "vae.pretrained must be a local folder holding a diffusers AutoencoderKL saved "
     "by save_pretrained (hub names are never downloaded), got 'stabilityai/sd-vae-ft-mse' (no such folder)"),
    ("empty", {}, "(no config.json)"),
    ("vq", {}, "config.json names 'VQModel', not AutoencoderKL"),
    ("bin", {}, f"(no {WEIGHTS}; pickled .bin weights are not read)"),
    ("f8", {}, "vae.downsample must be 8, the downsampling factor of vae.pretrained"),
    ("ok", {"latent_channels": 8}, "vae.latent_channels must be 4, the latent channels of vae.pretrained"),
]


@pytest.mark.parametrize("what, edits, expected", BAD, ids=[b[0] for b in BAD])
def test_check_refuses_folders_that_do_not_fit(tmp_path, capsys, tiny_params, what, edits, expected):
    folder = tmp_path / "vae"
    if what == "empty":
        folder.mkdir()
    elif what == "vq":
        torch.manual_seed(0)
        diffusers.VQModel(block_out_channels=(8,), norm_num_groups=8).save_pretrained(folder)
    elif what == "bin":
        save_tiny_autoencoder(folder, safe=False)
    elif what == "f8":
        save_tiny_autoencoder(folder, block_out_channels=(8, 8, 16, 16))
    elif what == "ok":
        save_tiny_autoencoder(folder)
    else:
        folder = what  # a hub name
    params = pretrained_params(tiny_params, folder)
    params["vae"].update(edits)
    assert expected in refused(capsys, ["check", str(write_params(tmp_path / "p.yaml", params))])


@pytest.mark.parametrize("kind, pretrained", [("pretrained", None), ("kl", "some/folder")])
def test_kind_and_folder_go_together(tmp_path, capsys, tiny_params, kind, pretrained):
    tiny_params["vae"].update(kind=kind, pretrained=pretrained)
    params = write_params(tmp_path / "p.yaml", tiny_params)
    out = tmp_path / "vae.safetensors"
    stage = ["train-vae", "--params", str(params), "--train", "t", "--val", "v", "--model", str(out),
             "--live", str(tmp_path / "live"), "--grid", str(tmp_path / "g.png")]  # fmt: skip
    for argv in (["check", str(params)], stage):  # refused before any work
        assert "vae.pretrained must name a local folder holding a diffusers AutoencoderKL" in refused(capsys, argv)
    assert not out.exists()


# --- the tiny DAG with a pretrained VAE ----------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = save_tiny_autoencoder(tmp_path_factory.mktemp("sd") / "vae")
    repo = make_repo(tmp_path_factory.mktemp("pretrained"))
    params = pretrained_params(yaml.safe_load((repo / "params.yaml").read_text()), folder)
    # one sweep entry and a 10-step reference row, as in test_e2e_conditional (test_e2e covers the sweep)
    params["sweep"].update(samplers=["ddim"], spacings=["leading"], reference_steps=10)
    write_params(repo / "params.yaml", params)
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path_factory.mktemp("hf"))}
    ran = ran_stages(sh("dvc repro", repo, env))  # the whole DAG, the report included
    assert {"train_vae", "encode", "evaluate_vae", "train_diffusion", "sample", "evaluate", "report"} <= ran
    return repo, folder, env



@pytest.mark.e2e
def test_train_vae_copies_the_folder_bit_for_bit(run, tmp_path):
    repo, folder, env = run
    from safetensors import safe_open

    from ldmpipe.io import unpack_metadata
    from ldmpipe.models.autoencoder import load_autoencoder

    vae = load_autoencoder(repo / "data/vae/model.safetensors")
    assert isinstance(vae, PretrainedAutoencoderKL)
    source = diffusers.AutoencoderKL.from_pretrained(folder, local_files_only=True).state_dict()
    copied = vae.vae.state_dict()
    assert copied.keys() == source.keys() and all(torch.equal(copied[k], source[k]) for k in source)
    with safe_open(str(repo / "data/vae/model.safetensors"), "pt") as f:
        extra = unpack_metadata(f.metadata())["extra"]
    assert extra == {"pretrained": str(folder), "sha256": hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()}
    summary = json.loads((repo / "reports/train_vae/metrics.json").read_text())
    assert set(summary) == {"val_mse", "val_psnr"} and summary["val_mse"] > 0  # no training, no loss
    assert (repo / "reports/train_vae/plots/metrics/loss.tsv").read_text() == "step\tloss\n"
    # a second run writes the same bytes (both engines run this same command)
    again = ["ldmpipe", "train-vae", "--params", "params.yaml", "--train", "data/prepared/train.safetensors",
             "--val", "data/prepared/val.safetensors", "--model", str(tmp_path / "m.safetensors"),
             "--live", str(tmp_path / "live"), "--grid", str(tmp_path / "g.png")]  # fmt: skip
    subprocess.run(again, cwd=repo, env=env, check=True, capture_output=True)
    assert (tmp_path / "m.safetensors").read_bytes() == (repo / "data/vae/model.safetensors").read_bytes()
    assert (tmp_path / "g.png").read_bytes() == (repo / "reports/figures/vae_reconstructions.png").read_bytes()
    assert (tmp_path / "live/metrics.json").read_bytes() == (repo / "reports/train_vae/metrics.json").read_bytes()


@pytest.mark.e2e
def test_encode_uses_it_and_scales_by_std(run):
    repo, folder, _ = run
    from ldmpipe.images import to_model_input
    from ldmpipe.io import load_arrays

    stats = json.loads((repo / "reports/encode.json").read_text())
    assert stats["pretrained_scaling_factor"] == 0.18215  # diffusers' default, reported, not used
    assert stats["scaled_unit_std"] and not math.isclose(stats["scale_factor"], 0.18215, rel_tol=0.05)
    val = load_arrays(repo / "data/prepared/val.safetensors")[0]["images"]
    latents, meta = load_arrays(repo / "data/latents/val.safetensors")
    source = diffusers.AutoencoderKL.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        mean = source.encode(to_model_input(val)).latent_dist.mean.numpy()
    np.testing.assert_allclose(latents["latents"], mean, rtol=0, atol=1e-5)
    assert meta["scale_factor"] == stats["scale_factor"]


@pytest.mark.e2e
def test_samples_are_decoded_with_it(run):
    repo, folder, _ = run
    from ldmpipe import runtime
    from ldmpipe.config import load_params
    from ldmpipe.generate import generate, make_sampler, schedule_of
    from ldmpipe.io import load_arrays
    from ldmpipe.models.autoencoder import load_autoencoder
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    p = load_params(repo / "params.yaml")
    device = runtime.setup("cpu")
    unet, extra = load_model(UNet, repo / "data/diffusion/model.safetensors")
    vae = load_autoencoder(repo / "data/vae/model.safetensors")
    sampler = make_sampler(p.sample.sampler, schedule_of(extra["diffusion"]), prediction=extra["diffusion"]["prediction"],
                           spacing=p.sample.spacing, eta=p.sample.eta)  # fmt: skip
    n = p.sample.batch_size  # the stage's first batch, recomputed
    first = generate(unet, vae, extra["scale_factor"], sampler, p.sample.steps, n, n, p.seed, device, progress=False)
    stored = load_arrays(repo / "data/samples/samples.safetensors")[0]["images"]
    assert np.array_equal(first, stored[:n])
    ae = json.loads((repo / "reports/vae_metrics.json").read_text())
    assert ae["kind"] == "pretrained" and all(math.isfinite(ae[k]) for k in ("val_mse", "val_psnr", "val_ssim", "rfid"))
    assert math.isfinite(json.loads((repo / "reports/metrics.json").read_text())["fid"])
    report = (repo / "reports/report.md").read_text()
    assert f"Pretrained diffusers AutoencoderKL from `{folder}` (not trained here)" in report


@pytest.mark.e2e
def test_export_of_the_run_samples_as_ours(run, tmp_path):
    """`ldmpipe export` with its default paths; the VAE is exported as a stock diffusers AutoencoderKL
    whose scaling_factor is our 1 / std; DDIM latents of a fresh offline process equal ours within 1e-4."""
    repo, _, env = run
    out = tmp_path / "pipe"
    sh(f"ldmpipe export --out {out}", repo, env)
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    vae_cfg = json.loads((out / "vae/config.json").read_text())
    scale = json.loads((repo / "reports/encode.json").read_text())["scale_factor"]
    assert vae_cfg["scaling_factor"] == scale and vae_cfg["shift_factor"] is None
    result = tmp_path / "result.safetensors"
    r = subprocess.run([sys.executable, str(HELPER), str(out), str(result), *map(str, SEEDS)], env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors.torch import load_file

    from ldmpipe.diffusion import sample_generators
    from ldmpipe.diffusion.sampling import sample_loop
    from ldmpipe.generate import make_sampler, schedule_of
    from ldmpipe.models.autoencoder import load_autoencoder
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    got = load_file(result)
    unet, extra = load_model(UNet, repo / "data/diffusion/model.safetensors")
    sampler = make_sampler("ddim", schedule_of(extra["diffusion"]), prediction=extra["diffusion"]["prediction"], spacing="leading")
    sampler.set_timesteps(index["default_steps"])
    z = sample_loop(unet, sampler, (len(SEEDS), 4, 8, 8), sample_generators(SEEDS), "cpu", progress=False)
    with torch.no_grad():
        images = (load_autoencoder(repo / "data/vae/model.safetensors").decode_latents(z / scale) / 2 + 0.5).clamp(0, 1)
    assert int(got["ldmpipe_imported"]) == 0
    assert (got["latents"] - z).abs().max() <= 1e-4 and z.abs().max() > 0.5
    assert (got["images"] - images).abs().max() <= 1e-4


@pytest.mark.e2e
def test_train_vae_refuses_images_it_does_not_take(run, tmp_path):
    repo, _, env = run
    folder = save_tiny_autoencoder(tmp_path / "gray", in_channels=1, out_channels=1)
    params = pretrained_params(yaml.safe_load((repo / "params.yaml").read_text()), folder)
    write_params(tmp_path / "p.yaml", params)
    argv = ["ldmpipe", "train-vae", "--params", str(tmp_path / "p.yaml"), "--train", "data/prepared/train.safetensors",
            "--val", "data/prepared/val.safetensors", "--model", str(tmp_path / "m.safetensors"),
            "--live", str(tmp_path / "live"), "--grid", str(tmp_path / "g.png")]  # fmt: skip
    r = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "vae.pretrained" in r.stderr and "maps 1-channel images to 1-channel ones, but the data has 3 channels" in r.stderr
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "live").exists()

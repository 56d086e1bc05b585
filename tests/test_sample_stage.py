"""Sampling through the real UNet and decoder: sample i (and its class) does not depend on the batch
size; the trajectory figure replays the first samples' reverse process."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from ldmpipe.config import load_params
from ldmpipe.io import load_arrays
from ldmpipe.models.checkpoint import save_model
from ldmpipe.models.unet import UNet
from ldmpipe.models.vae import AutoencoderKL
from ldmpipe.stages import sample


def run_sample(tmp_path, batch_size: int, n: int, name: str, sampler: str = "ddpm", steps: int = 5) -> np.ndarray:
    params = load_params(TINY)
    cfg = dataclasses.replace(params.sample, batch_size=batch_size, n_samples=n, sampler=sampler, steps=steps)
    params = dataclasses.replace(params, sample=cfg)
    args = argparse.Namespace(diffusion=str(tmp_path / "unet.safetensors"), vae=str(tmp_path / "vae.safetensors"),
                              samples=str(tmp_path / f"{name}.safetensors"), grid=str(tmp_path / f"{name}.png"),
                              trajectory=str(tmp_path / f"{name}-trajectory.png"))  # fmt: skip
    sample.run(args, params)
    return load_arrays(args.samples)[0]["images"]


def save_models(tmp_path) -> None:
    torch.manual_seed(0)
    unet = UNet(4, 4, 16, (1, 2), 1, (2,))
    torch.nn.init.normal_(unet.out[-1].weight, std=0.1)
    save_model(unet, tmp_path / "unet.safetensors",
               extra={"scale_factor": 0.7, "diffusion": {"schedule": "linear", "timesteps": 50,
                                                         "beta_start": 1e-4, "beta_end": 2e-2, "prediction": "epsilon"}})  # fmt: skip
    save_model(AutoencoderKL(3, 8, 4, 4), tmp_path / "vae.safetensors")


def same_but_rounding(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal uint8 images up to the batched kernels' float rounding (~1e-7 per value, README: Reproducibility):
    at most one level apart, at no more than 1 pixel value in 1000."""
    diff = np.abs(a.astype(np.int16) - b)
    return int(diff.max()) <= 1 and float((diff > 0).mean()) <= 1e-3


@pytest.mark.parametrize("sampler", ["ddpm", "dpm_solver_pp_sde"])  # both draw noise at every step
def test_sample_i_is_the_same_whatever_the_batch_size(tmp_path, sampler):
    save_models(tmp_path)
    whole = run_sample(tmp_path, batch_size=6, n=6, name="whole", sampler=sampler)
    split = run_sample(tmp_path, batch_size=4, n=6, name="split", sampler=sampler)
    prefix = run_sample(tmp_path, batch_size=2, n=3, name="prefix", sampler=sampler)
    assert whole.shape == (6, 16, 16, 3) and whole.dtype == np.uint8
    assert same_but_rounding(whole, split) and same_but_rounding(whole[:3], prefix)
    assert not same_but_rounding(whole[0], whole[1])


def test_trajectory_starts_at_the_samples_noise_and_ends_at_the_samples(tmp_path):
    """DDIM (eta 0), 12 steps: 8 columns at evaluations 0, 2, 3, 5, 6, 8, 9, 11 (evenly spaced, rounded); x_t
    of the first column is sample i's own x_T, decoded; x̂0 of the last column is the sample itself
    (DDIM's last step returns x̂0), up to the rounding of another batch size."""
    from ldmpipe import runtime
    from ldmpipe.diffusion import randn_per_sample, sample_generators
    from ldmpipe.generate import make_sampler, schedule_of, trajectory
    from ldmpipe.images import to_uint8
    from ldmpipe.models.autoencoder import load_autoencoder
    from ldmpipe.models.checkpoint import load_model

    save_models(tmp_path)
    samples = run_sample(tmp_path, batch_size=6, n=6, name="ddim", sampler="ddim", steps=12)
    unet, extra = load_model(UNet, tmp_path / "unet.safetensors")
    vae = load_autoencoder(tmp_path / "vae.safetensors")
    sampler = make_sampler("ddim", schedule_of(extra["diffusion"]), prediction="epsilon", spacing="leading")
    seed = load_params(TINY).seed
    columns, x_t, x0 = trajectory(unet, vae, 0.7, sampler, 12, seed, n=3, columns=8)
    assert [i for i, _ in columns] == [0, 2, 3, 5, 6, 8, 9, 11]
    assert [t for _, t in columns] == [int(sampler.timesteps[i]) for i, _ in columns] and columns[0][1] > columns[-1][1]
    assert x_t.shape == x0.shape == (3, 8, 16, 16, 3) and x_t.dtype == np.uint8
    noise = randn_per_sample((3, 4, 4, 4), sample_generators([runtime.stage_seed(seed, f"sample/{i}") for i in range(3)]))
    with torch.no_grad():
        assert np.array_equal(x_t[:, 0], to_uint8(vae.decode_latents(noise / 0.7)))
    assert np.abs(x0[:, -1].astype(int) - samples[:3].astype(int)).max() <= 2
    assert not np.array_equal(x0[:, 0], x0[:, -1])  # x̂0 changes along the way
    with Image.open(tmp_path / "ddim-trajectory.png") as img:  # the stage's figure: 4 samples x (x_t, x̂0) per column
        assert img.height > 8 * 2 * 16 and img.width > 8 * 2 * 16


def conditional_checkpoint(tmp_path, num_classes: int = 3) -> None:
    torch.manual_seed(0)
    unet = UNet(4, 4, 16, (1, 2), 1, (2,), num_classes=num_classes)
    torch.nn.init.normal_(unet.out[-1].weight, std=0.1)
    torch.nn.init.normal_(unet.class_embed.weight, std=1.0)  # classes that visibly differ
    names = [f"class{k}" for k in range(num_classes)]
    save_model(unet, tmp_path / "unet.safetensors",
               extra={"scale_factor": 0.7, "classes": names, "diffusion": {"schedule": "linear", "timesteps": 50,
                      "beta_start": 1e-4, "beta_end": 2e-2, "prediction": "v_prediction"}})  # fmt: skip
    save_model(AutoencoderKL(3, 8, 4, 4), tmp_path / "vae.safetensors")


def run_conditional(tmp_path, name: str, **keys) -> tuple[dict, dict]:
    """The sample stage (DDPM) with the tiny params' sample section changed by ``keys``."""
    params = load_params(TINY)
    params = dataclasses.replace(params, sample=dataclasses.replace(params.sample, sampler="ddpm", **keys))
    args = argparse.Namespace(diffusion=str(tmp_path / "unet.safetensors"), vae=str(tmp_path / "vae.safetensors"),
                              samples=str(tmp_path / f"{name}.safetensors"), grid=str(tmp_path / f"{name}.png"),
                              trajectory=str(tmp_path / f"{name}-trajectory.png"))  # fmt: skip
    sample.run(args, params)
    return load_arrays(args.samples)


def test_class_model_sample_i_is_the_same_whatever_the_batch_size(tmp_path):
    """Sample i's class and image depend on i alone; the labels, guidance and NFE are saved with them."""
    conditional_checkpoint(tmp_path)
    whole, meta = run_conditional(tmp_path, "whole", batch_size=7, n_samples=7, guidance_scale=2.0)
    split, _ = run_conditional(tmp_path, "split", batch_size=3, n_samples=7, guidance_scale=2.0)
    prefix, _ = run_conditional(tmp_path, "prefix", batch_size=2, n_samples=4, guidance_scale=2.0)
    assert whole["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    for arrays in (split, prefix):
        n = len(arrays["images"])
        assert same_but_rounding(arrays["images"], whole["images"][:n]) and np.array_equal(arrays["labels"], whole["labels"][:n])
    assert meta == {"sampler": "ddpm", "steps": 5, "guidance_scale": 2.0, "nfe": 10, "classes": ["class0", "class1", "class2"]}
    other, _ = run_conditional(tmp_path, "w1", batch_size=7, n_samples=7, guidance_scale=1.0)
    assert not np.array_equal(other["images"], whole["images"])  # the guidance scale changes the samples
    chosen, meta = run_conditional(tmp_path, "chosen", batch_size=7, n_samples=4, guidance_scale=1.0, classes=(2,))
    assert chosen["labels"].tolist() == [2, 2, 2, 2] and meta["nfe"] == 5  # w = 1: one pass per step
    assert np.array_equal(chosen["images"][2], other["images"][2])  # sample 2 was class 2 there too


def test_class_model_grid_has_one_row_per_class(tmp_path):
    conditional_checkpoint(tmp_path)
    run_conditional(tmp_path, "grid", batch_size=12, n_samples=12, guidance_scale=1.0, grid_size=7)
    with Image.open(tmp_path / "grid.png") as img:  # 3 rows of 7 // 3 = 2 images of 16 px at 2x, 2 px padding
        assert img.size == (2 * (32 + 2) + 2, 3 * (32 + 2) + 2)


def test_classes_beyond_the_model_are_refused(tmp_path):
    from ldmpipe.config import ConfigError

    conditional_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match=r"sample.classes must be class indices below the model's 3 classes, got \[0, 5\]"):
        run_conditional(tmp_path, "bad", classes=(0, 5))
    assert not (tmp_path / "bad.safetensors").exists()


def test_checkpoint_carries_the_snr_shift_to_sampling():
    """train_diffusion stores diffusion.snr_shift with the weights (left out at 1, so an unshifted checkpoint
    keeps its bytes), and sampling rebuilds the shifted schedule from it."""
    from ldmpipe.diffusion.schedule import NoiseSchedule
    from ldmpipe.generate import schedule_of
    from ldmpipe.stages.train_diffusion import checkpoint_extra

    d = load_params(TINY).diffusion
    assert "snr_shift" not in checkpoint_extra(d, 1.0, [])["diffusion"]
    extra = checkpoint_extra(dataclasses.replace(d, snr_shift=0.25), 1.0, [])
    assert extra["diffusion"]["snr_shift"] == 0.25
    want = NoiseSchedule.from_config(d.schedule, d.timesteps, d.beta_start, d.beta_end, snr_shift=0.25)
    assert torch.equal(schedule_of(extra["diffusion"]).betas, want.betas)
    assert not torch.equal(schedule_of(checkpoint_extra(d, 1.0, [])["diffusion"]).betas, want.betas)


def test_uniform_timestep_sampling_leaves_the_checkpoint_metadata_as_it_was():
    """diffusion.timestep_sampling is recorded only when it is not the uniform draw of before the key."""
    from ldmpipe.stages.train_diffusion import checkpoint_extra

    d = dataclasses.replace(load_params(TINY).diffusion, timestep_sampling="uniform")
    assert "timestep_sampling" not in checkpoint_extra(d, 1.0, [])["diffusion"]
    extra = checkpoint_extra(dataclasses.replace(d, timestep_sampling="importance"), 1.0, [])
    assert extra["diffusion"]["timestep_sampling"] == "importance"


def test_autoguidance_samples_with_the_guide_stored_beside_the_weights(tmp_path):
    """``save_model(..., guide=...)`` keeps a second set of weights that `load_model` ignores and `load_guide`
    reads; the sample stage at ``sample.autoguidance`` 2 samples out_guide + 2 (out - out_guide), counts the
    guide's pass, and a checkpoint without a guide is refused before anything is written."""
    from ldmpipe import runtime
    from ldmpipe.diffusion.guidance import AutoGuidedModel
    from ldmpipe.generate import decode_samples, make_sampler, sample_latents, schedule_of
    from ldmpipe.io import ArtifactError
    from ldmpipe.models.checkpoint import load_guide, load_model
    from ldmpipe.models.vae import AutoencoderKL

    save_models(tmp_path)
    unguided, _ = run_conditional(tmp_path, "plain", n_samples=4, batch_size=4)
    with pytest.raises(ArtifactError, match="holds no autoguidance guide .* but sample.autoguidance is 2"):
        run_conditional(tmp_path, "refused", n_samples=4, autoguidance=2.0)
    assert not list(tmp_path.glob("refused*"))
    unet, extra = load_model(UNet, tmp_path / "unet.safetensors")
    torch.manual_seed(1)
    weak = UNet(**unet.config)
    save_model(unet, tmp_path / "unet.safetensors", extra={**extra, "guide_step": 7}, guide=weak.state_dict())
    again, extra = load_model(UNet, tmp_path / "unet.safetensors")
    guide = load_guide(UNet, tmp_path / "unet.safetensors")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in unet.state_dict().items())
    assert all(torch.equal(guide.state_dict()[k], v) for k, v in weak.state_dict().items())
    arrays, meta = run_conditional(tmp_path, "guided", n_samples=4, batch_size=3, autoguidance=2.0)
    assert meta == {"sampler": "ddpm", "steps": 5, "autoguidance": 2.0, "guide_step": 7, "nfe": 10}
    assert not np.array_equal(arrays["images"], unguided["images"])
    # the same images from the formula itself, sampled by the library's loop in one batch
    params = load_params(TINY)
    sampler = make_sampler("ddpm", schedule_of(extra["diffusion"]), prediction="epsilon", spacing=params.sample.spacing)
    direct = AutoGuidedModel(again, guide.eval(), 2.0)
    z = next(sample_latents(again, sampler, 5, 4, 4, params.seed, runtime.setup("cpu"), False,
                            make_model=lambda a, b: direct))  # fmt: skip
    vae, _ = load_model(AutoencoderKL, tmp_path / "vae.safetensors")
    assert np.array_equal(decode_samples(vae, z, 0.7), arrays["images"])

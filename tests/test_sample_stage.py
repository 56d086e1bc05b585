"""Sampling through the real UNet and decoder: sample i (and its class) does not depend on the batch size."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from conftest import TINY
from ldmpipe.config import load_params
from ldmpipe.io import load_arrays
from ldmpipe.models.checkpoint import save_model
from ldmpipe.models.unet import UNet
from ldmpipe.models.vae import AutoencoderKL
from ldmpipe.stages import sample


def run_sample(tmp_path, batch_size: int, n: int, name: str) -> np.ndarray:
    params = load_params(TINY)
    cfg = dataclasses.replace(params.sample, batch_size=batch_size, n_samples=n, sampler="ddpm")
    params = dataclasses.replace(params, sample=cfg)
    args = argparse.Namespace(diffusion=str(tmp_path / "unet.safetensors"), vae=str(tmp_path / "vae.safetensors"),
                              samples=str(tmp_path / f"{name}.safetensors"), grid=str(tmp_path / f"{name}.png"))  # fmt: skip
    sample.run(args, params)
    return load_arrays(args.samples)[0]["images"]


def test_sample_i_is_the_same_whatever_the_batch_size(tmp_path):
    torch.manual_seed(0)
    unet = UNet(4, 4, 16, (1, 2), 1, (2,))
    torch.nn.init.normal_(unet.out[-1].weight, std=0.1)
    save_model(unet, tmp_path / "unet.safetensors",
               extra={"scale_factor": 0.7, "diffusion": {"schedule": "linear", "timesteps": 50,
                                                         "beta_start": 1e-4, "beta_end": 2e-2, "prediction": "epsilon"}})  # fmt: skip
    save_model(AutoencoderKL(3, 8, 4, 4), tmp_path / "vae.safetensors")
    whole = run_sample(tmp_path, batch_size=6, n=6, name="whole")
    split = run_sample(tmp_path, batch_size=4, n=6, name="split")
    prefix = run_sample(tmp_path, batch_size=2, n=3, name="prefix")
    assert whole.shape == (6, 16, 16, 3) and whole.dtype == np.uint8
    assert np.array_equal(whole, split)
    assert np.array_equal(whole[:3], prefix)
    assert not np.array_equal(whole[0], whole[1])


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
                              samples=str(tmp_path / f"{name}.safetensors"), grid=str(tmp_path / f"{name}.png"))  # fmt: skip
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
        assert np.array_equal(arrays["images"], whole["images"][:n]) and np.array_equal(arrays["labels"], whole["labels"][:n])
    assert meta == {"sampler": "ddpm", "steps": 5, "guidance_scale": 2.0, "nfe": 10, "classes": ["class0", "class1", "class2"]}
    other, _ = run_conditional(tmp_path, "w1", batch_size=7, n_samples=7, guidance_scale=1.0)
    assert not np.array_equal(other["images"], whole["images"])  # the guidance scale changes the samples
    chosen, meta = run_conditional(tmp_path, "chosen", batch_size=7, n_samples=4, guidance_scale=1.0, classes=(2,))
    assert chosen["labels"].tolist() == [2, 2, 2, 2] and meta["nfe"] == 5  # w = 1: one pass per step
    assert np.array_equal(chosen["images"][2], other["images"][2])  # sample 2 was class 2 there too


def test_class_model_grid_has_one_row_per_class(tmp_path):
    from PIL import Image

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

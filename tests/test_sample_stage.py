"""Sampling through the real UNet and decoder: sample i does not depend on the batch size."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
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

#!/usr/bin/env python
"""Load a folder written by ``ldmpipe export`` as a diffusers user would, and sample from it.

    python sample_exported.py FOLDER OUT.safetensors SEED...

Runs in a fresh process (the tests set HF_HUB_OFFLINE=1 and a private HF_HOME): only torch, diffusers
and safetensors are imported here. Writes the pipeline's final scaled latents (``output_type="latent"``)
and its decoded images (``"pt"``, (B, C, H, W) in [0, 1]) for one CPU generator per seed, with the
pipeline's default steps and eta, and whether anything imported ldmpipe (``ldmpipe_imported``: 0 or 1).
"""

from __future__ import annotations

import sys

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file


def main(folder: str, out: str, seeds: list[int]) -> None:
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    latents = pipe(batch_size=len(seeds), generator=generators(), output_type="latent").images
    images = pipe(batch_size=len(seeds), generator=generators(), output_type="pt").images
    imported = any(name == "ldmpipe" or name.startswith("ldmpipe.") for name in sys.modules)
    save_file({"latents": latents.contiguous(), "images": images.contiguous(),
               "ldmpipe_imported": torch.tensor(int(imported))}, out)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])

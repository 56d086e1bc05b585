"""Diagnosis: why does FID rise with the number of sampling steps?  (README: "Is the model sound ...")

Two measurements on a finished run's outputs under ``--root`` (``dvc repro train_diffusion`` and the
evaluator), 500 images each, the sampling stage's per-sample seeds:

1. FID against the step count for DDIM (leading, trailing) and DPM-Solver++, split into the evaluator's
   top (shape) features and its block statistics (colour, high-frequency energy), so a rise can be
   attributed; one grid (the first 16 seeds) per row under ``--grids``.
2. Partial reverse processes: real training latents noised to t_s (fixed noise), then 1, 4 or 25 DDIM
   steps (evenly spaced from t_s to 0) back; FID of the decoded result.  If every segment improves with
   steps when it starts from the true marginal q(x_t), the low-noise steps are not what degrades samples.

Usage: python benchmarks/diagnose_steps.py [--root .] [--out benchmarks/results/diagnose_steps.json]
       [--grids benchmarks/results/diagnose_steps]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ldmpipe import runtime
from ldmpipe.diffusion import DDIMSampler, NoiseSchedule, sample_loop
from ldmpipe.evaluation import Reference
from ldmpipe.generate import decode_samples, generate, make_sampler, schedule_of
from ldmpipe.io import load_arrays, save_image, write_json
from ldmpipe.metrics import extract
from ldmpipe.models.autoencoder import load_autoencoder
from ldmpipe.models.checkpoint import load_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.models.unet import UNet
from ldmpipe.plotting import image_grid

N = 500
ROWS = [("ddim", "leading", s) for s in (10, 25, 50, 200)] + [("ddim", "trailing", s) for s in (10, 50)] + [
    ("dpm_solver_pp", "leading", 10), ("dpm_solver_pp", "leading", 50)]  # fmt: skip
STARTS, STEPS = (150, 300, 500, 700, 900), (1, 4, 25)


class SplitFID:
    """FID of uint8 images (N, H, W, C) in all evaluator features, the top ones, and the block statistics."""

    def __init__(self, evaluator: Classifier, ref: Reference, device: torch.device):
        self.ev, self.ref, self.device = evaluator, ref, device
        self.top = evaluator.config["feature_dim"]  # the top features come first, then the block statistics
        self.refs = {"top": Reference.from_features(ref.features[:, : self.top]),
                     "stats": Reference.from_features(ref.features[:, self.top :])}  # fmt: skip

    def __call__(self, images: np.ndarray) -> dict[str, float]:
        f, _ = extract(self.ev.features, self.ev.head, images, 250, self.device)  # (N, D)
        return {"fid": self.ref.fid(f), "top": self.refs["top"].fid(f[:, : self.top]),
                "stats": self.refs["stats"].fid(f[:, self.top :])}  # fmt: skip


@torch.no_grad()
def partial_reverse(unet, vae, schedule: NoiseSchedule, prediction: str, x0: torch.Tensor, eps: torch.Tensor,
                    t_s: int, k: int, scale: float) -> np.ndarray:  # fmt: skip
    """x_{t_s} by the sampler's `add_noise` (eq. 4), then k DDIM (eta = 0) steps back on the grid
    round(t_s (k - i) / k), i = 0..k-1 (no spacing's: a grid of one's own; t_s >= k, or its timesteps
    repeat and the sampler refuses it), to x_0; decoded uint8."""
    sampler = DDIMSampler(schedule, eta=0.0, prediction=prediction)
    sampler.set_timesteps(timesteps=[round(t_s * (k - i) / k) for i in range(k)])
    x = sampler.add_noise(x0, eps, t_s)  # (N, C, h, w)
    x = sample_loop(unet, sampler, x.shape, None, x.device, progress=False, latents=x)
    return decode_samples(vae, x, scale)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--out", default="benchmarks/results/diagnose_steps.json")
    p.add_argument("--grids", default="benchmarks/results/diagnose_steps", type=Path)
    args = p.parse_args()
    data = args.root / "data"
    device = runtime.setup("cpu")
    ev, _ = load_model(Classifier, data / "evaluator/model.safetensors", device)
    score = SplitFID(ev, Reference.load(data / "evaluator/reference.safetensors"), device)
    vae = load_autoencoder(data / "vae/model.safetensors", device)
    unet, extra = load_model(UNet, data / "diffusion/model.safetensors", device)
    d, scale = extra["diffusion"], float(extra["scale_factor"])
    result: dict = {"n": N, "sweep": [], "partial": []}

    args.grids.mkdir(parents=True, exist_ok=True)
    for name, spacing, steps in ROWS:  # 1. FID against steps
        sampler = make_sampler(name, schedule_of(d), prediction=d["prediction"], spacing=spacing)
        images = generate(unet, vae, scale, sampler, steps, N, 250, 0, device, progress=False)
        row = {"sampler": name, "spacing": spacing, "steps": steps, **score(images)}
        save_image(args.grids / f"{name}-{spacing}-{steps}.png", image_grid(images[:16], ncol=8))
        result["sweep"].append(row)
        print("{sampler:14s} {spacing:8s} {steps:4d}: FID {fid:7.3f}  top {top:7.3f}  stats {stats:7.3f}".format(**row))

    latents, meta = load_arrays(data / "latents/train.safetensors")  # 2. partial reverse processes
    x0 = torch.from_numpy(latents["latents"][:N]).float().to(device) * float(meta["scale_factor"])
    eps = torch.randn(x0.shape, generator=runtime.generator(0, "diagnose_steps")).to(device)
    decoded = score(decode_samples(vae, x0, scale))
    result["decoded_real_latents"] = decoded
    print(f"decoded real latents: FID {decoded['fid']:.3f}")
    schedule = schedule_of(d)
    for t_s in STARTS:
        for k in STEPS:
            row = {"t_s": t_s, "steps": k, **score(partial_reverse(unet, vae, schedule, d["prediction"], x0, eps, t_s, k, scale))}
            result["partial"].append(row)
            print("from real x_t, t_s = {t_s:3d}, {steps:2d} steps: FID {fid:7.3f}  top {top:7.3f}  stats {stats:7.3f}".format(**row))
    write_json(args.out, result)


if __name__ == "__main__":
    main()

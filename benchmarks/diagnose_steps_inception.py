"""Diagnosis: does a second feature extractor see the same FID-against-steps curve as the evaluator?

The sweep scores the default model best at 10 leading steps and worst with its own reverse process
(DDPM, all T steps) in the pipeline's evaluator features (README: "Is the model sound ...").  If that
ordering came from the evaluator, the FID Inception network (pool3, 2048-d; ``pip install -e
".[inception]"``) would rank the rows differently.  On a finished run under ``--root``, 500 samples
per row on the sample stage's per-sample seeds, this prints and saves, per row:

- the evaluator's FID, its mean term ||mu - mu_real||^2 in the 64 top (shape) features, its
  precision/recall (k = 3, against the validation features) and its class mix (the fraction of
  images it calls each class; the dataset draws each shape with probability 1/5);
- Inception FID and KID against the Inception features of the validation split;
- a third view with no extractor: the Frechet distance between the sampled latents and the
  validation latents (256-d, the diffusion model's own space, before the decoder), and their std.

For both extractors it also scores the floor (500 training images against the same reference) and
the autoencoder's reconstructions of those images (what the VAE alone costs); the latent distance
gets the floor of 500 training latents.

With 2048-d features and n = 500 the Inception FID is biased upwards (README, "Inception FID beside
it"); the bias is the same for every row at the same n, and KID has none, so rows compare.

Usage: python benchmarks/diagnose_steps_inception.py [--root .] [--out benchmarks/results/diagnose_steps_inception.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ldmpipe import runtime
from ldmpipe.autoencoder_metrics import reconstruct
from ldmpipe.evaluation import Reference
from ldmpipe.features import InceptionExtractor
from ldmpipe.generate import decode_samples, make_sampler, sample_latents, schedule_of
from ldmpipe.io import load_arrays, write_json
from ldmpipe.metrics import extract, kernel_inception_distance, precision_recall
from ldmpipe.models.autoencoder import load_autoencoder
from ldmpipe.models.checkpoint import load_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.models.unet import UNet

N = 500
ROWS = [("dpm_solver_pp", "leading", s) for s in (10, 25, 50)] + [("dpm_solver_pp", "trailing", s) for s in (10, 50)] + [
    ("ddim", "leading", 10), ("ddim", "leading", 50), ("ddpm", "trailing", 1000)]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--out", default="benchmarks/results/diagnose_steps_inception.json")
    args = p.parse_args()
    data = args.root / "data"
    device = runtime.setup("cpu")
    ev, _ = load_model(Classifier, data / "evaluator/model.safetensors", device)
    ref = Reference.load(data / "evaluator/reference.safetensors")
    inception = InceptionExtractor.from_fid_helper()
    vae = load_autoencoder(data / "vae/model.safetensors", device)
    unet, extra = load_model(UNet, data / "diffusion/model.safetensors", device)
    d, scale = extra["diffusion"], float(extra["scale_factor"])
    val = load_arrays(data / "prepared/val.safetensors")[0]["images"]  # (600, H, W, C) uint8
    classes = json.loads((data / "prepared/meta.json").read_text())["classes"]
    top = ev.config["feature_dim"]  # the evaluator's top (shape) features come first, then its block statistics
    inc_val = inception(val, 100, device)[0]  # (600, 2048)
    inc_ref = Reference.from_features(inc_val)
    val_z = load_arrays(data / "latents/val.safetensors")[0]["latents"] * scale  # (600, z, h, w), unit std
    latent_ref = Reference.from_features(val_z.reshape(len(val_z), -1))  # no extractor: the diffusion model's own space

    def score(images: np.ndarray) -> dict[str, float]:
        f = inception(images, 100, device)[0]  # (N, 2048)
        kid, _ = kernel_inception_distance(inc_val, f, subsets=100, subset_size=N)
        ev_f, probs = extract(ev.features, ev.head, images, 250, device)  # (N, D), (N, K)
        precision, recall = precision_recall(ref.features, ev_f, k=3)
        called = np.bincount(probs.argmax(1), minlength=len(classes)) / len(probs)  # (K,) the class mix
        shift = float(((ev_f[:, :top].mean(0) - ref.mu[:top]) ** 2).sum())  # FID's mean term in the shape features
        return {"fid": ref.fid(ev_f), "mean_term_top": shift, "precision": precision, "recall": recall,
                "fid_inception": inc_ref.fid(f), "kid_inception": kid,
                "called": dict(zip(classes, called.round(4).tolist()))}  # fmt: skip

    result: dict = {"n": N, "reference_images": len(val), "rows": []}
    real = load_arrays(data / "prepared/train.safetensors")[0]["images"][:N]  # (N, H, W, C) uint8
    recon = reconstruct(vae, real, device)  # the autoencoder's reconstructions of the same images: what it alone costs
    for key, images in (("floor", real), ("vae_reconstructions", recon)):
        result[key] = score(images)
        print(f"{key:20s}: " + "FID {fid:7.3f}  Inception FID {fid_inception:7.2f}  KID {kid_inception:.5f}  called "
              "{called}".format(**result[key]))  # fmt: skip
    train_z = load_arrays(data / "latents/train.safetensors")[0]["latents"][:N].reshape(N, -1) * scale  # (N, z*h*w)
    result["floor"]["fd_latent"] = latent_ref.fid(train_z)
    for name, spacing, steps in ROWS:
        sampler = make_sampler(name, schedule_of(d), prediction=d["prediction"], spacing=spacing)
        z = torch.cat(list(sample_latents(unet, sampler, steps, N, 250, 0, device, progress=False)))  # (N, z, h, w) scaled
        images = np.concatenate([decode_samples(vae, b, scale) for b in z.split(250)])  # as `generate`, 250 at a time
        row = {"sampler": name, "spacing": spacing, "steps": steps, **score(images),
               "fd_latent": latent_ref.fid(z.reshape(N, -1).double().numpy()), "latent_std": float(z.std())}  # fmt: skip
        result["rows"].append(row)
        print("{sampler:14s} {spacing:8s} {steps:4d}: FID {fid:7.3f} (mean term, top {mean_term_top:.3f})  P/R "
              "{precision:.3f}/{recall:.3f}  Inception FID {fid_inception:7.2f}  KID {kid_inception:.5f}  latent FD "
              "{fd_latent:6.2f}  latent std {latent_std:.3f}  called {called}".format(**row), flush=True)  # fmt: skip
    write_json(args.out, result)


if __name__ == "__main__":
    main()

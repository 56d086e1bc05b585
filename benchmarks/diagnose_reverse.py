"""Diagnosis: where does the model's own reverse process (DDPM, every step) lose the data's class mix?

The default model's DDPM-1000 row draws too many circles and too few stars and hexagons (README, "Is the
model sound at every noise level?"), while a 10-step ODE sampler keeps the mix closer to the data's.
With a perfect denoiser both processes keep the marginal q(x_t) at every t, so started from real latents
noised to t_s (x_{t_s} = sqrt(abar) x0 + sqrt(1 - abar) eps, eq. 4, a fixed eps) they must end with the
data's mix.  Their drift from it, as t_s grows, says over which noise levels the model's error piles up,
and whether the stochastic process (fresh noise at each step) or the ODE is the one that drifts.

For each t_s in ``--starts``, on the first ``--n`` training latents (their labels known):
- DDPM (Ho et al. 2020, Algorithm 2) from t_s through every remaining step, per-sample generators;
- DDIM eta = 0 with 25 steps evenly from t_s (`diagnose_steps.partial_reverse`).
Each row: FID against the evaluator's reference, the evaluator's class mix, and ``kept``: the fraction
classified as the class of the latent it started from (t_s = 999 is pure noise: chance).

Usage: python benchmarks/diagnose_reverse.py [--root .] [--starts 999 800 600 400] [--noise-seed 0]
       [--s-noise 1.0] [--out benchmarks/results/diagnose_reverse.json] [--grid diagnose_reverse.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diagnose_steps import partial_reverse  # benchmarks/ is on sys.path when this file is run

from ldmpipe import runtime
from ldmpipe.diffusion import DDPMSampler, sample_generators, sample_loop
from ldmpipe.evaluation import Reference
from ldmpipe.generate import decode_samples, schedule_of
from ldmpipe.io import load_arrays, read_json, save_image, write_json
from ldmpipe.metrics import extract
from ldmpipe.models.autoencoder import load_autoencoder
from ldmpipe.models.checkpoint import load_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.models.unet import UNet
from ldmpipe.plotting import image_grid, titled_panels


class SNoiseDDPM(DDPMSampler):
    """DDPM (every step, trailing) whose fresh noise is S_noise sigma_t z (Karras et al. 2022, Algorithm 2's
    S_noise: a denoiser that removes slightly too much noise is compensated by adding slightly more)."""

    def __init__(self, schedule, *, prediction: str, s_noise: float = 1.0) -> None:
        super().__init__(schedule, prediction=prediction, spacing="trailing")
        self.s_noise = s_noise

    def variance(self, t: int) -> float:
        return self.s_noise**2 * super().variance(t)


def ddpm_from(unet, sampler, x: torch.Tensor, t_s: int, seeds: list[int], batch: int = 250) -> torch.Tensor:
    """The sampler's steps t_s, ..., 0 from x = x_{t_s} (N, C, h, w), per-sample generators (`sample_loop`
    from latents: every remaining step of a DDPM with all T steps)."""
    begin = int((sampler.timesteps > t_s).sum())  # the position of t_s in the descending timesteps
    if begin == len(sampler.timesteps) or int(sampler.timesteps[begin]) != t_s:
        raise ValueError(f"t_s = {t_s} is not one of the sampler's timesteps")
    return torch.cat([sample_loop(unet, sampler, x[b : b + batch].shape, sample_generators(seeds[b : b + batch]), x.device,
                                  latents=x[b : b + batch], begin_index=begin)
                      for b in range(0, len(x), batch)])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--starts", type=int, nargs="+", default=[999, 800, 600, 400])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--noise-seed", type=int, default=0, help="draws eps and the DDPM steps' noise")
    p.add_argument("--s-noise", type=float, default=1.0, help="scale of the DDPM steps' fresh noise (1: Algorithm 2)")
    p.add_argument("--out", default="benchmarks/results/diagnose_reverse.json")
    p.add_argument("--grid", default=None, help="also save a picture: the first 8 samples of every row (.png)")
    args = p.parse_args()
    data = args.root / "data"
    device = runtime.setup("cpu")
    ev, _ = load_model(Classifier, data / "evaluator/model.safetensors", device)
    ref = Reference.load(data / "evaluator/reference.safetensors")
    classes = read_json(data / "prepared/meta.json")["classes"]
    vae = load_autoencoder(data / "vae/model.safetensors", device)
    unet, extra = load_model(UNet, data / "diffusion/model.safetensors", device)
    d, scale = extra["diffusion"], float(extra["scale_factor"])
    latents, meta = load_arrays(data / "latents/train.safetensors")
    x0 = torch.from_numpy(latents["latents"][: args.n]).float().to(device) * float(meta["scale_factor"])  # (N, C, h, w)
    labels = np.asarray(latents["labels"][: args.n])
    eps = torch.randn(x0.shape, generator=runtime.generator(args.noise_seed, "diagnose_reverse")).to(device)
    schedule = schedule_of(d)
    abar = schedule.alphas_cumprod.double()  # (T,)
    ddpm = SNoiseDDPM(schedule, prediction=d["prediction"], s_noise=args.s_noise)
    ddpm.set_timesteps(d["timesteps"])  # every step: T-1, ..., 0

    def shares(indices: np.ndarray) -> dict[str, float]:  # class index (N,) -> each class's share
        return dict(zip(classes, (np.bincount(indices, minlength=len(classes)) / len(indices)).round(3).tolist()))

    def row(images: np.ndarray, **key) -> dict:
        feats, probs = extract(ev.features, ev.head, images, 250, device)
        called = probs.argmax(1)
        r = {**key, "fid": round(ref.fid(feats), 3), "kept": round(float((called == labels).mean()), 3), "called": shares(called)}
        print(r, flush=True)
        return r

    real = decode_samples(vae, x0, scale)
    rows, panels = [row(real, process="real latents, decoded", t_s=0)], [(["real latents,", "decoded"], image_grid(real[:8], ncol=4))]
    seeds = [runtime.stage_seed(args.noise_seed, f"diagnose_reverse/ddpm/{i}") for i in range(args.n)]
    for t_s in args.starts:
        x = ddpm.add_noise(x0, eps, t_s)  # x_{t_s}, eq. 4
        stochastic = decode_samples(vae, ddpm_from(unet, ddpm, x, t_s, seeds), scale)
        rows.append(row(stochastic, process="DDPM, every step" + (f", S_noise {args.s_noise}" if args.s_noise != 1 else ""), t_s=t_s))
        ode = partial_reverse(unet, vae, schedule, d["prediction"], x0, eps, t_s, 25, scale)
        rows.append(row(ode, process="DDIM eta=0, 25 steps", t_s=t_s))
        panels.append(([f"from t_s = {t_s}:", "DDPM (top),", "DDIM 25 (bottom)"], image_grid(np.concatenate([stochastic[:8], ode[:8]]), ncol=4)))
    if args.grid:
        title = f"The same {len(real[:8])} training latents, noised to t_s and taken back to t = 0 (noise seed {args.noise_seed})"
        save_image(args.grid, titled_panels(title, panels))
    write_json(args.out, {"n": args.n, "noise_seed": args.noise_seed, "s_noise": args.s_noise, "abar": {t: float(abar[t]) for t in args.starts},
                          "data_mix": shares(labels),
                          "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()

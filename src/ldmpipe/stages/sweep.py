"""Stage ``sweep``: FID and IS against the number of network evaluations for one sampler.

The question of the DDIM paper's table 1 (Song et al. 2021), asked of your own model: how few
steps can I afford?  Every step count draws the same ``sweep.n_samples`` per-sample seeds, so the
samplers are compared on common random numbers.  ``seconds`` (wall time) is the one value here that
varies between runs; no stage reads it.
"""

from __future__ import annotations

import argparse
import time

from .. import runtime
from ..config import Params
from ..generate import generate, make_sampler, schedule_of
from ..io import load_arrays, write_json
from ..evaluation import Reference
from ..metrics import extract, inception_score
from ..models.autoencoder import load_autoencoder
from ..models.checkpoint import load_model
from ..models.classifier import Classifier
from ..models.unet import UNet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", required=True, help="the sampler of this sweep point (one of sweep.samplers)")
    p.add_argument("--diffusion", required=True, help="input: EMA UNet weights")
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: reference feature statistics")
    p.add_argument("--out", required=True, help="output: one row per step count (.json)")


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.sweep
    device = runtime.setup(params.device)
    unet, extra = load_model(UNet, args.diffusion, device)
    vae = load_autoencoder(args.vae, device)
    evaluator, _ = load_model(Classifier, args.evaluator, device)
    ref = Reference(**load_arrays(args.reference)[0])
    d = extra["diffusion"]
    sampler = make_sampler(args.sampler, schedule_of(d), prediction=d["prediction"], spacing=params.sample.spacing,
                           eta=params.sample.eta)  # fmt: skip
    rows = []
    for steps in cfg.steps:
        sampler.set_timesteps(steps)
        start = time.perf_counter()
        images = generate(unet, vae, extra["scale_factor"], sampler, steps, cfg.n_samples, cfg.batch_size,
                          params.seed, device, progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        feats, probs = extract(evaluator.features, evaluator.head, images, cfg.batch_size, device)
        fid = ref.fid(feats)
        is_mean, _ = inception_score(probs, params.evaluate.is_splits)
        rows.append({"sampler": args.sampler, "steps": steps, "nfe": sampler.nfe, "fid": fid, "is_mean": is_mean,
                     "seconds": round(seconds, 3)})  # fmt: skip
        print(f"sweep: {args.sampler} {steps:4d} steps, {sampler.nfe:4d} NFE: FID {fid:8.3f}, IS {is_mean:.3f} ({seconds:.1f} s)")
    write_json(args.out, {"rows": rows})

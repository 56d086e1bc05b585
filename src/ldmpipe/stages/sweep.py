"""Stage ``sweep``: FID and IS against the number of network evaluations for one sampler and spacing.

The question of the DDIM paper's table 1 (Song et al. 2021), asked of your own model: how few
steps can I afford?  Every step count draws the same ``sweep.n_samples`` per-sample seeds, so samplers
and spacings are compared on common random numbers, and every row's small grid shows the same first
``sweep.grid_size`` images.  Wall time differs between runs by nature, so it goes to the uncached
``--timing`` file only: the rows (``--out``) and the grids are the same bytes run after run.
``sweep_reference`` (DDPM with all T steps) measures its row with the same functions.  A class model
samples as the ``sample`` stage does (``sample.classes``, ``sample.guidance_scale``), and so does an
autoguided one (``sample.autoguidance``); NFE then counts every network pass.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import runtime
from ..config import Params
from ..constants import SAMPLERS, SPACINGS
from ..evaluation import Reference
from ..generate import class_labels, generate, guide_for, make_sampler, nfe, schedule_of
from ..io import save_image, write_json
from ..metrics import extract, inception_score
from ..models.autoencoder import Autoencoder, load_autoencoder
from ..models.checkpoint import load_model
from ..models.classifier import Classifier
from ..models.unet import UNet
from ..plotting import sample_grid, titled_panels


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", required=True, choices=SAMPLERS, help="the sampler of this entry (one of sweep.samplers)")
    p.add_argument("--spacing", required=True, choices=SPACINGS, help="its timestep spacing (one of sweep.spacings)")
    add_io_arguments(p)


def add_io_arguments(p: argparse.ArgumentParser) -> None:
    """The inputs and outputs of every sweep entry (shared with ``sweep_reference``)."""
    p.add_argument("--diffusion", required=True, help="input: EMA UNet weights")
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: reference feature statistics")
    p.add_argument("--out", required=True, help="output: one row per step count (.json)")
    p.add_argument("--grid", required=True, help="output: one labelled small grid per step count (.png)")
    p.add_argument("--timing", required=True, help="output: wall time per step count, uncached (.json)")


@dataclass
class Models:
    """What a sweep entry samples with and measures with."""

    unet: UNet
    extra: dict[str, Any]  # the UNet checkpoint's extras: scale_factor, diffusion params
    vae: Autoencoder
    evaluator: Classifier
    reference: Reference
    device: torch.device
    guide: UNet | None = None  # autoguidance's guide, loaded when sample.autoguidance != 1


def load(args: argparse.Namespace, params: Params) -> Models:
    device = runtime.setup(params.device)
    unet, extra = load_model(UNet, args.diffusion, device)
    vae = load_autoencoder(args.vae, device)
    evaluator, _ = load_model(Classifier, args.evaluator, device)
    guide = guide_for(args.diffusion, params.sample.autoguidance, device)
    return Models(unet, extra, vae, evaluator, Reference.load(args.reference), device, guide)


def measure(m: Models, params: Params, sampler_name: str, spacing: str, steps_list: tuple[int, ...],
            label: str, reference: bool = False) -> tuple[list[dict], list, dict[str, float]]:  # fmt: skip
    """Rows (FID, IS, NFE per step count), grid panels (text lines, picture) and wall times of one entry."""
    cfg, d = params.sweep, m.extra["diffusion"]
    sampler = make_sampler(sampler_name, schedule_of(d), prediction=d["prediction"], spacing=spacing, eta=params.sample.eta)
    rows, panels, timing = [], [], {}
    labels, w = class_labels(m.unet, params.sample.classes, cfg.n_samples), params.sample.guidance_scale
    w_g = params.sample.autoguidance
    for steps in steps_list:
        start = time.perf_counter()
        images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, steps, cfg.n_samples, cfg.batch_size,
                          params.seed, m.device, progress=f"sweep {label}, {steps} steps", labels=labels, guidance_scale=w, guide=m.guide,
                          autoguidance=w_g)  # (N, H, W, C) uint8; fmt: skip
        seconds = time.perf_counter() - start
        feats, probs = extract(m.evaluator.features, m.evaluator.head, images, cfg.batch_size, m.device)
        fid = m.reference.fid(feats)
        is_mean, _ = inception_score(probs, params.evaluate.is_splits)
        n = nfe(sampler, m.unet, w, w_g)
        rows.append({"sampler": sampler_name, "spacing": spacing, "steps": steps, "nfe": n, "fid": fid,
                     "is_mean": is_mean, "reference": reference, "label": label})  # fmt: skip
        text = [f"{steps} steps, {n} NFE", f"FID {fid:.2f}, IS {is_mean:.2f}"]
        panels.append((text, sample_grid(images, None if labels is None else labels.numpy(), cfg.grid_size)))
        timing[f"seconds_{steps}_steps"] = round(seconds, 3)
        print(f"sweep: {label}: {steps:4d} steps, {n:4d} NFE: FID {fid:8.3f}, IS {is_mean:.3f} ({seconds:.1f} s)")
    return rows, panels, timing


def autoguided(params: Params) -> str:
    """The label's suffix for rows sampled with autoguidance (empty without)."""
    return f", autoguidance {params.sample.autoguidance:g}" if params.sample.autoguidance != 1.0 else ""


def write(args: argparse.Namespace, rows: list[dict], panels: list, timing: dict[str, float]) -> None:
    """The cached rows and grid, then the uncached wall times."""
    write_json(args.out, {"rows": rows})
    save_image(args.grid, titled_panels(rows[0]["label"], panels))
    write_json(args.timing, timing)


def run(args: argparse.Namespace, params: Params) -> None:
    m = load(args, params)
    label = f"{args.sampler}, {args.spacing}" + autoguided(params)
    write(args, *measure(m, params, args.sampler, args.spacing, params.sweep.steps, label))

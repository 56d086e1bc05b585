"""Stage ``guidance_sweep``: FID and class accuracy of a class model against the guidance scale w.

Classifier-free guidance trades diversity for fidelity to the class (Ho & Salimans 2022, fig. 4): as w
grows, samples look more like their class and less like each other, so class accuracy rises while FID
first falls, then rises again.  Every w in ``sweep.guidance`` samples as the ``sample`` stage does (its
sampler, steps, ``n_samples``, batch size, seeds and classes), so the row at ``sample.guidance_scale`` is
the ``evaluate`` stage's FID and class accuracy, and every FID here is at the same n as that one
(autoguided too when ``sample.autoguidance`` != 1).  An
unconditional model has nothing to guide: the table is then empty and both pictures say so.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..config import Params
from ..evaluation import class_accuracy
from ..generate import class_labels, generate, make_sampler, nfe, schedule_of
from ..io import load_arrays, save_figure, save_image, write_text
from ..metrics import extract, inception_score
from ..plotting import guidance_figure, sample_grid, titled_panels
from .sweep import Models, load

COLUMNS = ["guidance_scale", "nfe", "fid", "class_accuracy", "is_mean"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diffusion", required=True, help="input: EMA UNet weights")
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: reference feature statistics")
    p.add_argument("--val", required=True, help="input: validation arrays (the evaluator's accuracy on them: the ceiling)")
    p.add_argument("--table", required=True, help=f"output: {', '.join(COLUMNS)}, one row per w (.csv)")
    p.add_argument("--figure", required=True, help="output: FID and class accuracy against w, and their trade-off (.png)")
    p.add_argument("--grid", required=True, help="output: one small grid per w, a row per class (.png)")


def measure(m: Models, params: Params) -> tuple[list[dict], list]:
    """One row (FID, class accuracy, IS, NFE) and one grid panel per guidance scale."""
    cfg, d = params.sample, m.extra["diffusion"]
    sampler = make_sampler(cfg.sampler, schedule_of(d), prediction=d["prediction"], spacing=cfg.spacing, eta=cfg.eta)
    labels = class_labels(m.unet, cfg.classes, cfg.n_samples)  # (N,)
    rows, panels = [], []
    for w in params.sweep.guidance:
        images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, cfg.steps, cfg.n_samples, cfg.batch_size,
                          params.seed, m.device, progress=f"guidance sweep, w = {w:g}", labels=labels, guidance_scale=w, guide=m.guide,
                          autoguidance=cfg.autoguidance)  # fmt: skip
        feats, probs = extract(m.evaluator.features, m.evaluator.head, images, cfg.batch_size, m.device)
        row = {"guidance_scale": w, "nfe": nfe(sampler, m.unet, w, cfg.autoguidance), "fid": m.reference.fid(feats),
               "class_accuracy": class_accuracy(probs, labels.numpy()),
               "is_mean": inception_score(probs, params.evaluate.is_splits)[0]}  # fmt: skip
        rows.append(row)
        text = [f"w = {w:g}, {row['nfe']} NFE", f"FID {row['fid']:.2f}, acc {row['class_accuracy']:.1%}"]
        panels.append((text, sample_grid(images, labels.numpy(), params.sweep.grid_size)))
        print(f"guidance_sweep: w = {w:g} ({row['nfe']} NFE): FID {row['fid']:.3f}, class accuracy "
              f"{row['class_accuracy']:.4f}, IS {row['is_mean']:.3f}")  # fmt: skip
    return rows, panels


def notice(text: str) -> Image.Image:
    """A small white picture holding one line of text."""
    font = ImageFont.load_default()
    img = Image.new("RGB", (int(font.getlength(text)) + 12, 26), "white")
    ImageDraw.Draw(img).text((6, 6), text, fill="black", font=font)
    return img


def run(args: argparse.Namespace, params: Params) -> None:
    m = load(args, params)
    if m.unet.num_classes == 0:
        write_text(args.table, ",".join(COLUMNS) + "\n")
        text = "unconditional model (diffusion.conditioning: none): no guidance to sweep"
        save_image(args.figure, notice(text))
        save_image(args.grid, notice(text))
        print(f"guidance_sweep: {text}")
        return
    rows, panels = measure(m, params)
    val = load_arrays(args.val)[0]
    drawn = sorted(set(class_labels(m.unet, params.sample.classes, params.sample.n_samples).tolist()))
    seen = np.isin(val["labels"], drawn)  # the real images of the classes drawn
    ceiling = class_accuracy(extract(m.evaluator.features, m.evaluator.head, val["images"][seen], params.sample.batch_size,
                                     m.device)[1], val["labels"][seen])  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_text(args.table, table.to_csv(index=False, float_format="%.6g"))
    save_figure(args.figure, guidance_figure(table, ceiling))
    title = f"{params.sample.sampler}, {params.sample.steps} steps: one row per class, at each guidance scale w"
    save_image(args.grid, titled_panels(title, panels))

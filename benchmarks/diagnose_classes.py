"""Diagnosis: what limits a class model's class accuracy?  (README: "Class-conditional generation")

On a finished class-model run under ``--root`` (``dvc exp run -S diffusion.conditioning=class``), with the
run's evaluator:

1. the evaluator's accuracy on the real validation images and on the autoencoder's reconstructions of
   them: if the reconstructions are classified right, the latent space is not what limits accuracy;
2. class accuracy, FID and the confusion matrix (rows: the class asked for, columns: the evaluator's
   call) of guided samples for several samplers, spacings and guidance scales, on the sample stage's
   per-sample seeds and balanced classes: if accuracy is the same for all of them, neither the sampler
   nor w is the cause;
3. with ``--second-evaluator`` (weights of another ``train-evaluator`` run, e.g. another seed): the
   sample stage's samples classified by both evaluators, and how often they agree: if two classifiers
   that are both right on real images disagree on the samples, the samples are ambiguous, not the
   evaluator wrong;
4. guided partial reverse processes: the validation latents noised to t_s (fixed noise), then 25 DDIM steps
   back to t = 0 with their own labels at w = 1.5, decoded and classified: the largest t_s from which the
   real shapes come back right says at which noise levels the model loses them (a grid of hexagons per t_s);
5. two published variants of the guidance formula at the default sampler: the guided output rescaled
   toward the conditional one's std (Lin et al. 2024, sec. 3.4, phi = 0.7) and guidance applied only
   in an interval of t (Kynkäänniemi et al. 2024; w = 1, the plain conditional model, outside it).

Usage: python benchmarks/diagnose_classes.py [--root .] [--n 500] [--second-evaluator PATH]
       [--out benchmarks/results/diagnose_classes.json]

A second evaluator on the run's data (params.yaml with another ``seed``, here ``two.yaml``):
    ldmpipe train-evaluator --params two.yaml --train data/prepared/train.safetensors
        --val data/prepared/val.safetensors --model eval2/model.safetensors
        --reference eval2/reference.safetensors --metrics eval2/evaluator.json
"""

from __future__ import annotations

import argparse
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from diagnose_steps import partial_reverse  # run as a script: benchmarks/ is on sys.path

from ldmpipe import runtime
from ldmpipe.autoencoder_metrics import reconstruct
from ldmpipe.config import load_params
from ldmpipe.diffusion.guidance import GuidedModel, guide
from ldmpipe.generate import class_labels, generate, make_sampler, schedule_of
from ldmpipe.io import load_arrays, save_image, write_json
from ldmpipe.metrics import extract
from ldmpipe.models.checkpoint import load_model
from ldmpipe.models.classifier import Classifier
from ldmpipe.plotting import image_grid
from ldmpipe.stages.sweep import Models, load

# (sampler, spacing, steps, DDIM eta, guidance scales): the default; more steps of the same ODE; the
# probability-flow ODE followed closely (trailing 50); the same solver on the SDE; stochastic samplers
# (DDIM eta = 1, DDPM) up to the model's own reverse process, DDPM with all 1000 steps
ROWS = [("dpm_solver_pp", "leading", 10, 0.0, (1.5, 3.0)), ("dpm_solver_pp", "leading", 25, 0.0, (1.5,)),
        ("dpm_solver_pp", "trailing", 50, 0.0, (1.5,)), ("ddim", "trailing", 50, 0.0, (1.5,)),
        ("dpm_solver_pp_sde", "leading", 10, 0.0, (1.5, 2.0, 3.0)), ("dpm_solver_pp_sde", "leading", 25, 0.0, (1.5,)),
        ("ddim", "leading", 50, 1.0, (1.5,)), ("ddpm", "trailing", 250, 0.0, (1.5,)),
        ("ddpm", "trailing", 1000, 0.0, (1.5,))]  # fmt: skip
STARTS, PARTIAL_STEPS, PARTIAL_W = (200, 400, 600, 800, 999), 25, 1.5  # item 4
# item 5: (w, rescale phi, guided interval of t): rescaled at growing w; guidance in the middle, the low- and
# the high-noise half only
VARIANTS = [(1.5, 0.7, (0, 999)), (2.0, 0.7, (0, 999)), (3.0, 0.7, (0, 999)), (5.0, 0.7, (0, 999)),
            (3.0, 0.0, (200, 800)), (3.0, 0.0, (0, 500)), (3.0, 0.0, (500, 999))]  # fmt: skip


class GuidanceVariant:
    """``model(x, t)``: guided at scale w inside ``interval`` of t and plainly conditional outside it, the
    guided output (B, C, H, W) optionally rescaled to the conditional output's per-sample std, mixed by phi:
    phi * g * std(out_class) / std(g) + (1 - phi) * g (Lin et al. 2024, eq. 15-16)."""

    def __init__(self, net, labels: torch.Tensor, null: int, w: float, phi: float, interval: tuple[int, int]) -> None:
        self.net, self.labels, self.null = net, labels, torch.full_like(labels, null)
        self.w, self.phi, self.interval = w, phi, interval

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self.interval
        if not lo <= int(t[0]) <= hi:  # every row of a sampler step has the same t
            return self.net(x, t, self.labels)
        out_class, out_null = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, self.null])).chunk(2)
        g = guide(out_class, out_null, self.w)  # (B, C, H, W)
        if self.phi:
            ratio = out_class.std(dim=(1, 2, 3), keepdim=True) / g.std(dim=(1, 2, 3), keepdim=True)
            g = self.phi * g * ratio + (1 - self.phi) * g
        return g


def classify(m: Models, images: np.ndarray, labels: np.ndarray, names: list[str], with_fid: bool = True) -> tuple[dict, np.ndarray]:
    """Accuracy, per-class accuracy, FID (in the run's evaluator's features only: ``m.reference``) and the
    confusion matrix of uint8 images (N, H, W, C); the evaluator's calls (N,)."""
    feats, probs = extract(m.evaluator.features, m.evaluator.head, images, 250, m.device)
    pred = probs.argmax(1)
    confusion = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    fid = {"fid": m.reference.fid(feats)} if with_fid else {}
    return {"accuracy": float((pred == labels).mean()), **fid,
            "per_class": {names[c]: float((pred[labels == c] == c).mean()) for c in np.unique(labels)},
            "confusion": confusion.tolist()}, pred  # fmt: skip


def show(tag: str, r: dict) -> None:
    """Print accuracy, FID, per-class accuracy and the confusion matrix of one ``classify`` result."""
    per = ", ".join(f"{k} {v:.0%}" for k, v in r["per_class"].items())
    fid = f", FID {r['fid']:.2f}" if "fid" in r else ""
    print(f"{tag}: accuracy {r['accuracy']:.1%}{fid} ({per})")
    print("  confusion (rows: asked, columns: called)\n" + "\n".join(f"  {row}" for row in r["confusion"]), flush=True)


def second_opinion(m: Models, path: Path, samples_path: Path, val: dict, names: list[str]) -> dict:
    """The sample stage's samples under the run's evaluator and the one at ``path`` (and its accuracy
    on the real validation images ``val``); their agreement."""
    samples = load_arrays(samples_path)[0]
    first, pred1 = classify(m, samples["images"], samples["labels"], names)
    m2 = Models(m.unet, m.extra, m.vae, load_model(Classifier, path, m.device)[0], m.reference, m.device)
    second, pred2 = classify(m2, samples["images"], samples["labels"], names, with_fid=False)
    real = classify(m2, val["images"], val["labels"], names, with_fid=False)[0]
    show(f"real validation images, {path}", real)
    show("sample stage's samples, the run's evaluator", first)
    show(f"sample stage's samples, {path}", second)
    agree = float((pred1 == pred2).mean())
    print(f"the two evaluators agree on {agree:.1%} of the samples")
    return {"run": first, "second": second, "second_real": real, "agreement": agree}


def partial(m: Models, latents_path: Path, val: dict, names: list[str], grid: Path) -> dict:
    """Item 4: accuracy of guided partial reverse processes from the validation latents, per start t_s; a
    grid of the first 8 hexagons (or of the last class): the real images, then one row per t_s."""
    lat, meta = load_arrays(latents_path)
    labels = lat["labels"]  # (N,)
    if not np.array_equal(labels, val["labels"]):
        raise SystemExit(f"{latents_path} is not in the order of the validation images")
    x0 = torch.from_numpy(lat["latents"]).float().to(m.device) * float(meta["scale_factor"])  # (N, z, h, w)
    eps = torch.randn(x0.shape, generator=runtime.generator(0, "diagnose_classes")).to(m.device)
    d = m.extra["diffusion"]
    model = GuidedModel(m.unet, torch.from_numpy(labels).long().to(m.device), m.unet.null_class, PARTIAL_W)
    schedule = schedule_of(d)
    shown = names.index("hexagon") if "hexagon" in names else len(names) - 1
    pick = np.flatnonzero(labels == shown)[:8]
    rows, results = [val["images"][pick]], {}
    for t_s in STARTS:
        images = partial_reverse(model, m.vae, schedule, d["prediction"], x0, eps, t_s, PARTIAL_STEPS, m.extra["scale_factor"])
        results[str(t_s)] = classify(m, images, labels, names)[0]
        show(f"from the validation latents at t_s = {t_s}, {PARTIAL_STEPS} DDIM steps, w = {PARTIAL_W:g}", results[str(t_s)])
        rows.append(images[pick])
    save_image(grid, image_grid(np.concatenate(rows), ncol=len(pick)))
    print(f"wrote {grid} (rows: real, then t_s = {', '.join(map(str, STARTS))})")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--n", default=500, type=int, help="samples per row")
    p.add_argument("--second-evaluator", type=Path, help="weights of a second evaluator (item 3)")
    p.add_argument("--out", default="benchmarks/results/diagnose_classes.json")
    p.add_argument("--grid", default="benchmarks/results/diagnose_classes_partial.png", type=Path)
    args = p.parse_args()
    data, params = args.root / "data", load_params(args.root / "params.yaml")
    m = load(Namespace(diffusion=data / "diffusion/model.safetensors", vae=data / "vae/model.safetensors",
                       evaluator=data / "evaluator/model.safetensors",
                       reference=data / "evaluator/reference.safetensors"), params)  # fmt: skip
    if m.unet.num_classes == 0:
        raise SystemExit(f"{data / 'diffusion/model.safetensors'} is unconditional: run with diffusion.conditioning=class")
    names = json.loads((data / "prepared/meta.json").read_text())["classes"]
    val = load_arrays(data / "prepared/val.safetensors")[0]
    results = {"real": classify(m, val["images"], val["labels"], names)[0]}
    show("real validation images", results["real"])
    recon = reconstruct(m.vae, val["images"], m.device)  # encode -> decode, as the samples are decoded
    results["reconstructions"] = classify(m, recon, val["labels"], names)[0]
    show("their VAE reconstructions", results["reconstructions"])
    d, labels = m.extra["diffusion"], class_labels(m.unet, None, args.n)
    for sampler_name, spacing, steps, eta, scales in ROWS:
        for w in scales:
            sampler = make_sampler(sampler_name, schedule_of(d), prediction=d["prediction"], spacing=spacing, eta=eta)
            images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, steps, args.n, 250, params.seed,
                              m.device, progress=False, labels=labels, guidance_scale=w)  # fmt: skip
            tag = f"{sampler_name}{f' eta {eta:g}' if eta else ''}, {spacing}, {steps} steps, w = {w:g}"
            results[tag] = classify(m, images, labels.numpy(), names)[0]
            show(tag, results[tag])
    cfg = params.sample
    for variant in VARIANTS:  # item 5, at the sample stage's sampler, spacing and steps
        sampler = make_sampler(cfg.sampler, schedule_of(d), prediction=d["prediction"], spacing=cfg.spacing, eta=cfg.eta)
        w, phi, (lo, hi) = variant
        images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, cfg.steps, args.n, 250, params.seed, m.device,
                          progress=False, make_model=lambda a, b: GuidanceVariant(
                              m.unet, labels[a:b].to(m.device), m.unet.null_class, w, phi, (lo, hi)))  # fmt: skip
        tag = f"{cfg.sampler}, {cfg.spacing}, {cfg.steps} steps, w = {w:g}, rescale {phi:g}, guided at t in [{lo}, {hi}]"
        results[tag] = classify(m, images, labels.numpy(), names)[0]
        show(tag, results[tag])
    results["partial"] = partial(m, data / "latents/val.safetensors", val, names, args.grid)
    if args.second_evaluator:
        results["second_evaluator"] = second_opinion(m, args.second_evaluator, data / "samples/samples.safetensors", val, names)
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Autoguidance (Karras et al. 2024): the model guided by an earlier snapshot of its own training run.

    out = out_guide + w (out_model - out_guide)        (on the raw network output, as CFG is)

where the guide is the same network and training run stopped early: the EMA weights after step 1000 of
the default 3000, which ``train.guide_step`` stores beside the model at no training cost (the loop's
learning rate is constant after warm-up and nothing in it depends on the total, so they are the weights a
1000-step run ends with). It is evaluated once more per sampler step. The pipeline runs it with
``sample.autoguidance``; this script measures it beside the unguided model on one run, and was used to
choose the guide and w (README: "Is the model sound at every noise level?").

Rows on a finished run under ``--root``:
- an unconditional model: FID of ``--n`` samples per sampler, spacing and step count, unguided (w = 1)
  and autoguided (each w in ``--w``), the sample stage's per-sample seeds; the sample stage's own setting
  again at ``--n-sample`` samples; a grid of the first 64 samples unguided and autoguided;
- a class model: class accuracy and FID at the sample stage's setting for classifier-free guidance at
  ``sample.guidance_scale`` alone, then autoguidance alone and both (out_class + (w_cfg - 1)(out_class -
  out_null) + (w - 1)(out_class - out_guide)) at each w in ``--w``.

The guide: by default the one stored in the run's model (``-S train.guide_step=1000``); ``--guide`` names
another, e.g. the stage's own command with a params file that differs in ``train.steps`` only:
    sed 's/^  steps: 3000$/  steps: 1000/' params.yaml > guide.yaml   # train.steps (vae.steps has a comment)
    ldmpipe train-diffusion --params guide.yaml --latents data/latents/train.safetensors
        [--meta data/prepared/meta.json] --model guide/model.safetensors --live guide/live
        --val-latents data/latents/val.safetensors --timestep-error guide/te.tsv --timestep-figure guide/te.png
With ``--other-network`` the guide may be another network, e.g. a narrower UNet (``unet.channels``), as
Karras et al. 2024's guides are smaller as well as shorter-trained; its config goes into ``--out``.

Usage: python benchmarks/autoguidance.py [--guide guide/model.safetensors] [--root .] [--params params.yaml]
       [--guide-steps 1000] [--other-network] [--w 1.5] [--n 500] [--n-sample 1000] [--out benchmarks/results/autoguidance.json] [--tag seed0]
"""

from __future__ import annotations

import argparse
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
from diagnose_classes import classify  # run as a script: benchmarks/ is on sys.path

from ldmpipe.config import load_params
from ldmpipe.diffusion.guidance import AutoGuidedModel
from ldmpipe.generate import class_labels, generate, make_sampler, schedule_of
from ldmpipe.io import save_image, write_json
from ldmpipe.metrics import extract
from ldmpipe.models.checkpoint import load_guide, load_model
from ldmpipe.models.unet import UNet
from ldmpipe.plotting import image_grid
from ldmpipe.stages.sweep import Models, load

ROWS = [(sampler, spacing, steps) for sampler in ("ddim", "dpm_solver_pp") for spacing in ("leading", "trailing")
        for steps in (10, 25, 50)]  # the default sweep's rows  # fmt: skip


def fid(m: Models, images: np.ndarray) -> float:
    feats, _ = extract(m.evaluator.features, m.evaluator.head, images, 250, m.device)
    return float(m.reference.fid(feats))


def unconditional(m: Models, guide_net, params, ws: list[float], n: int, n_sample: int, grid: Path) -> dict:
    d, cfg, out = m.extra["diffusion"], params.sample, {}
    settings = [(s, sp, k, n) for s, sp, k in ROWS] + [(cfg.sampler, cfg.spacing, cfg.steps, n_sample)]
    panels = []
    for k, (name, spacing, steps, count) in enumerate(settings):
        for w in [1.0, *ws]:
            sampler = make_sampler(name, schedule_of(d), prediction=d["prediction"], spacing=spacing, eta=0.0)
            images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, steps, count, 250, params.seed, m.device,
                              progress=False, make_model=lambda a, b, w=w: AutoGuidedModel(m.unet, guide_net, w))  # fmt: skip
            tag = f"{name}, {spacing}, {steps} steps, {count} samples, w = {w:g}"
            out[tag] = fid(m, images)
            print(f"{tag}: FID {out[tag]:.3f}", flush=True)
            if k == len(settings) - 1:  # the sample stage's row: its grid
                panels.append(images[:64])
    rows = [panel[r * 8 : (r + 1) * 8] for r in range(8) for panel in panels]  # each panel an 8 x 8 block
    save_image(grid, image_grid(np.concatenate(rows), ncol=8 * len(panels)))
    print(f"wrote {grid} (8 x 8 blocks, left to right: w = {', '.join(f'{w:g}' for w in [1.0, *ws])})")
    return out


def conditional(m: Models, guide_net, params, ws: list[float], n: int, names: list[str]) -> dict:
    d, cfg, labels = m.extra["diffusion"], params.sample, class_labels(m.unet, params.sample.classes, n)
    out = {}
    settings = [(1.0, cfg.guidance_scale)] + [(w, w_cfg) for w in ws for w_cfg in (1.0, cfg.guidance_scale)]
    for w_ag, w_cfg in settings:
        sampler = make_sampler(cfg.sampler, schedule_of(d), prediction=d["prediction"], spacing=cfg.spacing, eta=cfg.eta)
        images = generate(m.unet, m.vae, m.extra["scale_factor"], sampler, cfg.steps, n, 250, params.seed, m.device,
                          progress=False, make_model=lambda a, b, w_ag=w_ag, w_cfg=w_cfg: AutoGuidedModel(
                              m.unet, guide_net, w_ag, labels[a:b], m.unet.null_class, w_cfg))  # fmt: skip
        tag = f"{cfg.sampler}, {cfg.spacing}, {cfg.steps} steps, autoguidance w = {w_ag:g}, CFG w = {w_cfg:g}"
        out[tag] = classify(m, images, labels.numpy(), names)[0]
        print(f"{tag}: accuracy {out[tag]['accuracy']:.1%}, FID {out[tag]['fid']:.3f}, "
              f"per class {out[tag]['per_class']}", flush=True)  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--params", type=Path, help="default: ROOT/params.yaml")
    p.add_argument("--guide", type=Path, help="EMA weights of the same run stopped early (default: the guide stored "
                   "in the run's model by train.guide_step)")
    p.add_argument("--guide-steps", default=1000, type=int, help="the guide's train.steps, recorded in --out")
    p.add_argument("--other-network", action="store_true", help="allow a --guide of another size (its config is "
                   "recorded in --out), as Karras et al. 2024's smaller guides")  # fmt: skip
    p.add_argument("--w", default=[1.5], type=float, nargs="+", help="autoguidance scales")
    p.add_argument("--n", default=500, type=int, help="samples per sweep row and per class-model row")
    p.add_argument("--n-sample", default=1000, type=int, help="samples of the sample stage's row")
    p.add_argument("--out", default="benchmarks/results/autoguidance.json", type=Path)
    p.add_argument("--tag", default="seed0", help="key of this run in --out (other keys are kept)")
    p.add_argument("--grid", default="benchmarks/results/autoguidance.png", type=Path)
    args = p.parse_args()
    data, params = args.root / "data", load_params(args.params or args.root / "params.yaml")
    m = load(Namespace(diffusion=data / "diffusion/model.safetensors", vae=data / "vae/model.safetensors",
                       evaluator=data / "evaluator/model.safetensors",
                       reference=data / "evaluator/reference.safetensors"), params)  # fmt: skip
    model = data / "diffusion/model.safetensors"
    guide_net = load_model(UNet, args.guide, m.device)[0] if args.guide else load_guide(UNet, model, m.device)
    if guide_net is None:
        raise SystemExit(f"{model}: holds no guide (train.guide_step null); name one with --guide")
    if guide_net.config != m.unet.config and not args.other_network:
        raise SystemExit(f"{args.guide}: not the same network as {model} (--other-network allows it)")
    if m.unet.num_classes:
        names = json.loads((data / "prepared/meta.json").read_text())["classes"]
        result = conditional(m, guide_net, params, args.w, args.n, names)
    else:
        result = unconditional(m, guide_net, params, args.w, args.n, args.n_sample, args.grid)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.tag] = {"guide_steps": args.guide_steps, "seed": params.seed, "rows": result}
    if guide_net.config != m.unet.config:
        results[args.tag]["guide_network"] = {"config": guide_net.config,
                                              "parameters": sum(p.numel() for p in guide_net.parameters())}  # fmt: skip
    write_json(args.out, results)
    print(f"wrote {args.out} [{args.tag}]")


if __name__ == "__main__":
    main()

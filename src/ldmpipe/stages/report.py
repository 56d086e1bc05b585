"""Stage ``report``: one Markdown page with figures, metrics (FID beside its floor) and params, and the
same page as self-contained HTML. Both name the git commit they were built at, whether the work tree
matched it, and how the main metrics moved since the previous commit's."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import yaml

from .. import html_page, provenance
from ..compare import MAIN_METRICS
from ..config import Params, to_dict
from ..io import ArtifactError, listed, read_json, save_figure, write_text
from ..plotting import loss_figure
from .report_conditional import class_section, drawn_classes, guidance_section, md_text, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meta", required=True, help="input: dataset meta (.json)")
    p.add_argument("--vae-metrics", required=True, help="input: autoencoder DVCLive summary (.json)")
    p.add_argument("--vae-loss", required=True, help="input: autoencoder loss curve (.tsv)")
    p.add_argument("--latent-metrics", required=True, help="input: latent statistics (.json)")
    p.add_argument("--vae-eval", required=True, help="input: autoencoder reconstruction metrics (.json)")
    p.add_argument("--evaluator-metrics", required=True, help="input: evaluator metrics (.json)")
    p.add_argument("--diffusion-metrics", required=True, help="input: diffusion DVCLive summary (.json)")
    p.add_argument("--diffusion-loss", required=True, help="input: diffusion loss curve (.tsv)")
    p.add_argument("--metrics", required=True, help="input: evaluation metrics (.json)")
    p.add_argument("--timestep-error", required=True, help="input: per-timestep error of the diffusion model (.tsv)")
    p.add_argument("--timestep-figure", required=True, help="input: the per-timestep error, plotted (.png)")
    p.add_argument("--vae-figures", nargs="+", required=True, help="input: autoencoder figures, in order (.png)")
    p.add_argument("--figures", nargs="+", required=True, help="input: figures to show, in order (.png)")
    p.add_argument("--sweep-table", required=True, help="input: the sweep's rows (.csv, from sweep_report)")
    p.add_argument("--sweep-figure", required=True, help="input: the sweep's FID against NFE (.png)")
    p.add_argument("--sweep-grids", required=True, help="input: folder of the sweep's per-entry grids (.png)")
    p.add_argument("--guidance-table", required=True, help="input: the guidance sweep's rows (.csv; empty: unconditional)")
    p.add_argument("--guidance-figure", required=True, help="input: FID and class accuracy against w (.png)")
    p.add_argument("--guidance-grid", required=True, help="input: the guidance sweep's grids (.png)")
    p.add_argument("--loss-figure", required=True, help="output: loss curves (.png)")
    p.add_argument("--out", required=True, help="output: the report (.md)")
    p.add_argument("--html", required=True, help="output: the report as one self-contained page (.html)")


def read_curve(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a DVCLive metric's .tsv (step, then the metric); empty if nothing was logged."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows, name = list(reader), next(k for k in reader.fieldnames or () if k != "step")
    return np.array([int(r["step"]) for r in rows], dtype=np.int64), np.array([float(r[name]) for r in rows])


def autoencoder_section(params: Params, ae: dict, lat: dict, figures: str) -> str:
    """Reconstruction metrics, latent statistics before/after scaling, and the autoencoder's figures."""
    rows = [
        ("validation MSE ↓ / PSNR ↑", f"{ae['val_mse']:.5f} / {ae['val_psnr']:.2f} dB"),
        ("validation SSIM ↑", f"{ae['val_ssim']:.4f}"),
        ("rFID ↓ (reconstructions vs originals)", f"{ae['rfid']:.3f}"),
    ]
    if ae["kind"] == "vq":
        rows.append(("codebook usage / perplexity", f"{ae['codebook_usage']:.1%} of {ae['codebook_size']} codes / "
                                                    f"{ae['perplexity']:.1f}"))  # fmt: skip
    ok = "yes" if lat["scaled_unit_std"] else "**no**"
    rows += [
        ("latent shape / scale factor", f"{tuple(lat['latent_shape'])} / {lat['scale_factor']:.4f}"),
        (f"scaled train latents: std (unit within {lat['unit_std_tolerance']:.0%}?)", f"{lat['scaled_std']:.4f} ({ok})"),
    ]
    channels = table(
        [(str(c), f"{m:.3f}", f"{s:.3f}", f"{sm:.3f}", f"{ss:.3f}")
         for c, (m, s, sm, ss) in enumerate(zip(lat["channel_mean"], lat["channel_std"],
                                                lat["scaled_channel_mean"], lat["scaled_channel_std"]))],
        ("channel", "mean", "std", "scaled mean", "scaled std"),
    )  # fmt: skip
    what = {"kl": f"KL-regularised (KL weight {params.vae.kl_weight:g})",
            "vq": f"VQ ({params.vae.codebook_size} codes, β={params.vae.beta:g}, "
                  f"{'EMA codebook' if params.vae.codebook_ema else 'codebook loss'})",
            "pretrained": f"Pretrained diffusers AutoencoderKL from `{params.vae.pretrained}` (not trained here)"}[ae["kind"]]  # fmt: skip
    adv = f", adversarial (PatchGAN, weight {params.vae.disc_weight:g} from step {params.vae.disc_start})" if params.vae.disc_weight else ""
    return f"""## Autoencoder

{what}{adv}, f={params.vae.downsample}; metrics on the {ae['n_val']} validation images; rFID uses the frozen evaluator.

{table(rows, ("quantity", "value"))}

Training latents per channel, before and after scaling:

{channels}

{figures}"""


def timestep_section(tsv: str, figure: str, target: str) -> str:
    """The diffusion model's denoising error at each probed timestep: a table and its figure."""
    with open(tsv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    body = table([(r["t"], f"{float(r['abar']):.3g}", f"{float(r['target_mse']):.4g}", f"{float(r['x0_mse']):.4g}")
                  for r in rows], ("t", "ᾱ_t", f"{target}-MSE (training target)", "x0-MSE"))  # fmt: skip
    return f"""## Diffusion model: error at each noise level

The EMA model on the validation latents (unit variance, so an x0-MSE of 1 is no better than predicting
their mean). A sampler that starts at t = T-1 (trailing spacing, DDPM with all steps) relies on the
high-noise rows; a model whose x0-MSE explodes there produces noise, whatever its average loss.

{body}

![timestep_error]({figure})"""


def sweep_section(csv_path: str, figure: str, grids: str, rel, sweep, autoguidance: float = 1.0) -> str:
    """The sweep's rows as a table (reference and best row marked), its FID-vs-NFE plot and the grid of
    every entry (``<grids>/<sampler>-<spacing>.png``, ``<grids>/reference.png``, as dvc.yaml names them);
    ``autoguidance`` != 1: every row, the reference too, was autoguided (``sample.autoguidance``)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    best = min((r for r in rows if r["reference"] == "False"), key=lambda r: float(r["fid"]))
    ref = next(r for r in rows if r["reference"] == "True")
    cells = [(f"**{r['sampler']} (reference)**" if r is ref else r["sampler"], r["spacing"], r["steps"], r["nfe"],
              f"**{float(r['fid']):.3f}**" if r is best or r is ref else f"{float(r['fid']):.3f}", f"{float(r['is_mean']):.3f}")
             for r in rows]  # fmt: skip
    stems = [*dict.fromkeys(f"{r['sampler']}-{r['spacing']}" for r in rows if r is not ref), "reference"]
    labels = [*dict.fromkeys(r["label"] for r in rows if r is not ref), ref["label"]]
    for stem in stems:
        if not (Path(grids) / f"{stem}.png").is_file():
            raise ArtifactError(f"{Path(grids) / f'{stem}.png'}: file not found (the grid of sweep entry {stem})")
    shown = "\n\n".join(f"**{label}**\n\n![sweep {stem}]({rel(Path(grids) / f'{stem}.png')})" for stem, label in zip(stems, labels))
    ratio = float(ref["fid"]) / float(best["fid"])
    process = ("the model's own reverse process" if autoguidance == 1.0 else
               f"the model's reverse process autoguided at w_g = {autoguidance:g}, as every row (unguided, it is the model's own)")  # fmt: skip
    return f"""## Sampler sweep

FID and IS of {sweep.n_samples} samples per row, against network evaluations (NFE; Heun evaluates twice per
step but the last), for every sampler at every timestep spacing; every row draws the same per-sample seeds.
The reference row, **{ref['label']}**, is {process} (Ho et al. 2020, Algorithm 2):
FID {float(ref['fid']):.3f}, {ratio:.2f}× the best other row's ({best['sampler']}, {best['spacing']}, {best['steps']} steps:
{float(best['fid']):.3f}). A fast sampler far below the reference skips a part of the reverse process the model has
not learnt (such as the high-noise end that leading spacing never visits); one far above it loses to its shortcut.

{table(cells, ("sampler", "spacing", "steps", "NFE", "FID ↓", "IS ↑"))}

![fid_vs_nfe]({figure})

The first {sweep.grid_size} samples of every row (the same seeds throughout), one small grid per step count:

{shown}"""


def provenance_line(state: dict | None) -> str:
    """The commit the report was built at and whether the work tree matched it (``provenance.work_tree``)."""
    if state is None:
        return "Built outside a git work tree: no commit to name."
    n = len(state["modified"])
    if n == 0:
        return f"Built at commit `{state['commit']}`; the work tree was clean (the pipeline's outputs aside)."
    shown = listed(state["modified"], fmt=lambda p: f"`{p}`")
    return f"Built at commit `{state['commit']}`; the work tree was **not clean**: {n} path(s) differed from it ({shown})."


def metrics_diff(m: dict, earlier: tuple[str, str, dict] | None) -> str:
    """The main metrics against an earlier commit's (``provenance.earlier_json``), as a table."""
    if earlier is None:
        return "Nothing to compare with: HEAD and HEAD~1 hold the same metrics as this run, or none."
    rev, commit, old = earlier
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    keys = [k for k in MAIN_METRICS if number(m.get(k)) and number(old.get(k))]
    rows = [(k, f"{old[k]:.4g}", f"{m[k]:.4g}", f"{m[k] - old[k]:+.3g}" + (f" ({(m[k] - old[k]) / abs(old[k]):+.1%})" if old[k] else ""))
            for k in keys]  # fmt: skip
    return f"Against {rev} (`{commit[:10]}`), the metrics file as committed there:\n\n" + table(rows, ("metric", rev, "now", "change"))


def run(args: argparse.Namespace, params: Params) -> None:
    load = read_json  # a missing file or key names the file
    meta, vae, lat, ae = load(args.meta), load(args.vae_metrics), load(args.latent_metrics), load(args.vae_eval)
    ev, dm, m = load(args.evaluator_metrics), load(args.diffusion_metrics), load(args.metrics)
    weighting = f", Min-SNR-γ={params.diffusion.min_snr_gamma:g}" if params.diffusion.loss_weighting == "min_snr" else ""
    target = {"epsilon": "ε", "sample": "x0", "v_prediction": "v"}[params.diffusion.prediction]
    diffusion_loss = f"diffusion ({target}-MSE{weighting})"
    curves = {diffusion_loss: read_curve(args.diffusion_loss)}
    if ae["kind"] != "pretrained":  # a pretrained autoencoder logs no loss
        reg = {"kl": "KL", "vq": "VQ"}[ae["kind"]] + ("+GAN" if params.vae.disc_weight else "")
        curves = {f"autoencoder (L1+MSE+{reg})": read_curve(args.vae_loss), **curves}
    fig = loss_figure(curves)
    save_figure(args.loss_figure, fig)

    out_dir = Path(args.out).parent
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    captions = {"dataset": "Dataset preview (one row per class)", "vae_recon": "Autoencoder: originals above reconstructions",
                "vae_latents": "Validation latents, 2-D PCA, coloured by class",
                "sample": f"Samples ({params.sample.sampler}, {params.sample.steps} steps)",
                "trajectory": "Denoising trajectory of the first samples: x_t, and the x0 the model predicts there, decoded"}  # fmt: skip
    if "class_accuracy" in m:  # a class model's grid: one row per class
        names = ", ".join(map(md_text, drawn_classes(m, meta["classes"])))
        captions["sample"] = captions["sample"][:-1] + f", guidance scale {m['guidance_scale']:g}; one row per class: {names})"
    if "autoguidance" in m:  # Karras et al. 2024: guided by the run's own EMA at an earlier step
        captions["sample"] = (captions["sample"][:-1] + f", autoguidance {m['autoguidance']:g} by the EMA weights at "
                              f"step {m['guide_step']}, {m['nfe']} NFE)")  # fmt: skip
    def show(paths: list[str]) -> str:
        return "\n\n".join(
            f"**{next((v for k, v in captions.items() if k in Path(p).stem), Path(p).stem)}**\n\n![{Path(p).stem}]({rel(p)})"
            for p in paths
        )

    figures = show(args.figures)
    def cell(key: str, spread: str | None = None, fmt: str = ".3f") -> str:
        return f"{m[key]:{fmt}}" + (f" ± {m[spread]:{fmt}}" if spread else "")

    rows = [
        ("FID ↓", cell("fid"), cell("fid_real_floor")),
        ("IS ↑", cell("is_mean", "is_std"), cell("is_mean_real", "is_std_real")),
        ("KID ↓", cell("kid_mean", "kid_std", ".4f"), cell("kid_mean_real", "kid_std_real", ".4f")),
        ("precision ↑", cell("precision"), cell("precision_real")),
        ("recall ↑", cell("recall"), cell("recall_real")),
    ]
    metrics = table(rows, ("metric", f"samples (n={m['n_samples']})", f"real held-out (n={m['n_samples']}, the floor)"))
    # git's view from the project folder; the outputs of runs (reports/, DVC's lock file) do not make it unclean
    project = Path(args.params).resolve().parent
    state = provenance.work_tree(project, ignore=[out_dir.resolve(), project / "dvc.lock"])
    earlier = provenance.earlier_json(project, Path(args.metrics).resolve(), m)
    trained_vae = [] if ae["kind"] == "pretrained" else [  # a pretrained autoencoder was not trained here
        (f"final autoencoder ({ae['kind']}) loss", f"{vae['loss']:.4f} after {vae['step']} steps")]
    others = table(
        [
            ("evaluator validation accuracy", f"{ev['val_accuracy']:.4f}"),
            *trained_vae,
            (f"final {diffusion_loss} loss", f"{dm['loss']:.4f} after {dm['step']} steps"),
        ],
        ("quantity", "value"),
    )
    # class models only (else ""): class accuracy and per-class FID, and the guidance sweep
    classes, guidance = (f"\n\n{s}" if s else "" for s in (
        class_section(m, meta["classes"]), guidance_section(args.guidance_table, args.guidance_figure, args.guidance_grid, rel, params)))
    text = f"""# ldmpipe report

{provenance_line(state)}

Dataset **{meta['dataset']}**: {meta['n_train']} train / {meta['n_val']} validation images of
{meta['image_size']}×{meta['image_size']}×{meta['channels']}, classes {', '.join(map(md_text, meta['classes']))}.

## Metrics

All metrics use the **{m['extractor']}** feature extractor ({m['feature_dim']}-d features; input: {m['resize_protocol']})
against {m['n_reference']} real validation images: FID; IS over {m['is_splits']} splits (mean ± population std);
KID over {m['kid_subsets']} subsets of {m['kid_subset_size']} (mean ± std); precision/recall with k={m['pr_k']}.
The floor is the same metric for held-out real images at the same n: a perfect generator would
score about the floor, not 0.

{metrics}

{metrics_diff(m, earlier)}

{others}{classes}

{autoencoder_section(params, ae, lat, show(args.vae_figures))}

{timestep_section(args.timestep_error, rel(args.timestep_figure), target)}

## Figures

{figures}

**Training loss**

![losses]({rel(args.loss_figure)})

{sweep_section(args.sweep_table, rel(args.sweep_figure), args.sweep_grids, rel, params.sweep, params.sample.autoguidance)}{guidance}

## Params

```yaml
{yaml.safe_dump({k: (to_dict(v) if hasattr(v, '__dataclass_fields__') else v) for k, v in vars(params).items()}, sort_keys=False).strip()}
```
"""
    page = html_page.render(text, out_dir, f"ldmpipe report: {meta['dataset']}")  # before writing: it may refuse an image
    write_text(args.out, text)
    write_text(args.html, page)
    print(f"report: wrote {args.out} and {args.html}")

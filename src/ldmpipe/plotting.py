"""Pictures people would rather look at than read: image grids and loss curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images: np.ndarray, ncol: int | None = None, scale: int = 2, pad: int = 2) -> Image.Image:
    """Tile uint8 images (N, H, W, C) into one RGB picture, each upscaled ``scale``x (nearest)."""
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    if c == 1:
        images = np.repeat(images, 3, axis=3)
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y : y + h, x : x + w] = img
    return Image.fromarray(canvas)


def pair_grid(top: np.ndarray, bottom: np.ndarray, ncol: int = 8) -> Image.Image:
    """Row pairs: ``ncol`` originals above their ``ncol`` reconstructions, repeated (fewer than ``ncol``
    images: one pair of shorter rows)."""
    ncol = max(1, min(ncol, len(top), len(bottom)))
    n = (min(len(top), len(bottom)) // ncol) * ncol
    rows = [x for i in range(0, n, ncol) for x in (top[i : i + ncol], bottom[i : i + ncol])]
    return image_grid(np.concatenate(rows), ncol=ncol)


def labelled_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 8) -> Image.Image:
    """One row per class (first ``per_class`` examples of each), for a dataset preview."""
    rows = []
    for k in range(len(classes)):
        idx = np.flatnonzero(labels == k)[:per_class]
        row = np.zeros((per_class, *images.shape[1:]), dtype=np.uint8)
        row[: len(idx)] = images[idx]
        rows.append(row)
    return image_grid(np.concatenate(rows), ncol=per_class)


def sample_grid(images: np.ndarray, labels: np.ndarray | None, grid_size: int) -> Image.Image:
    """The first ``grid_size`` samples; from a class model (labels (N,)), one row per class drawn, in class
    order, each holding that class's first grid_size // (classes drawn) samples."""
    if labels is None:
        return image_grid(images[:grid_size])
    drawn = np.unique(labels)  # sorted class indices
    rows = np.searchsorted(drawn, labels)  # (N,): the row of each sample
    return labelled_grid(images, rows, [str(c) for c in drawn], per_class=max(1, grid_size // len(drawn)))


TEXT_LINE = 14  # px per line of text in `titled_panels`
PANEL_GAP = 6  # px around and between its panels


def titled_panels(title: str, panels: Sequence[tuple[Sequence[str], Image.Image]]) -> Image.Image:
    """Pictures side by side on white, each under its own lines of text, all under one title line.

    With k panels of width w_i (each at least as wide as its text), L the most text lines of a panel
    and h the tallest panel, the picture is (sum w_i + (k + 1) GAP) x (2 GAP + (1 + L) LINE + h) pixels,
    widened only if the title is longer."""
    font = ImageFont.load_default()
    lines = max(len(text) for text, _ in panels)
    widths = [max(img.width, *(math.ceil(font.getlength(t)) for t in text)) for text, img in panels]
    width = max(sum(widths) + (len(panels) + 1) * PANEL_GAP, math.ceil(font.getlength(title)) + 2 * PANEL_GAP)
    top = PANEL_GAP + (1 + lines) * TEXT_LINE
    canvas = Image.new("RGB", (width, top + max(img.height for _, img in panels) + PANEL_GAP), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((PANEL_GAP, PANEL_GAP), title, fill="black", font=font)
    x = PANEL_GAP
    for (text, img), w in zip(panels, widths):
        for i, t in enumerate(text):
            draw.text((x, PANEL_GAP + (1 + i) * TEXT_LINE), t, fill="black", font=font)
        canvas.paste(img.convert("RGB"), (x + (w - img.width) // 2, top))
        x += w + PANEL_GAP
    return canvas


def loss_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """One panel per named curve (steps, values), log-scaled loss axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.2), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], curves.items()):
        ax.plot(x, y, lw=1.2)
        ax.set(title=name, xlabel="step", ylabel="loss", yscale="log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fid_vs_nfe_figure(table):
    """FID against network evaluations on a log axis (Song et al. 2021, table 1): one colour per sampler,
    solid for leading and dashed for trailing spacing (dotted: linspace); the reference rows (``reference``
    true, e.g. DDPM with all T steps) as a black star with a horizontal line at their FID.

    ``table``: a DataFrame with columns sampler, spacing, nfe, fid, reference, label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"leading": "-", "trailing": "--", "linspace": ":"}
    sweep, references = table[~table["reference"]], table[table["reference"]]
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(sweep["sampler"]))}
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for (name, spacing), group in sweep.groupby(["sampler", "spacing"], sort=False):
        group = group.sort_values("nfe")
        ax.plot(group["nfe"], group["fid"], marker="o", ms=4, ls=styles[spacing], color=colours[name],
                label=f"{name}, {spacing}")  # fmt: skip
    for row in references.itertuples():
        ax.axhline(row.fid, color="0.4", lw=0.8, ls="-.", zorder=0)
        ax.plot([row.nfe], [row.fid], "*", color="k", ms=11, label=f"{row.label} (FID {row.fid:.3g})")
    ax.set(xscale="log", xlabel="network evaluations (NFE)", ylabel="FID", title="FID against sampling cost")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 10, 100 rather than 10^1, 10^2
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def latent_pca_figure(points: np.ndarray, labels: np.ndarray, classes: Sequence[str], explained: Sequence[float],
                      title: str = "latents"):  # fmt: skip
    """Scatter of 2-D projected latents (N, 2), one colour per class, axes labelled with explained variance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(classes):
        sel = labels == k
        ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=cmap(k % 10), label=name)
    ax.set(xlabel=f"PC 1 ({explained[0]:.0%} of variance)", ylabel=f"PC 2 ({explained[1]:.0%} of variance)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    return fig


def timestep_error_figure(rows: Sequence[Mapping[str, float]], prediction: str):
    """Per-timestep error of the denoiser (``ldmpipe.diffusion.diagnostics``): x0-MSE and the training
    target's MSE against t, log-scaled; x0-MSE = 1 is what predicting the latents' mean scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(t, [r["x0_mse"] for r in rows], "o-", label="x0 MSE (implied)")
    target = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[prediction]
    ax.plot(t, [r["target_mse"] for r in rows], "s--", label=f"{target} MSE (training target)")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="x0 MSE of the mean (unit-variance latents)")
    ax.set(yscale="log", xlabel="timestep t (noise grows →)", ylabel="MSE on validation latents",
           title="Denoising error at each noise level")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def guidance_figure(table, ceiling: float):
    """Classifier-free guidance (Ho & Salimans 2022, fig. 4): left, FID and class accuracy against the
    guidance scale w; right, the trade-off, FID against class accuracy with each point labelled by its w.
    The evaluator's accuracy on real images (``ceiling``) is a dashed line on both accuracy axes.

    ``table``: a DataFrame with columns guidance_scale, fid, class_accuracy, one row per w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.sort_values("guidance_scale")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    left.plot(t["guidance_scale"], t["fid"], "o-", color="C0", label="FID")
    left.set(xlabel="guidance scale w", ylabel="FID", title="FID and class accuracy against w")
    acc = left.twinx()
    acc.plot(t["guidance_scale"], t["class_accuracy"], "s--", color="C1", label="class accuracy")
    acc.axhline(ceiling, color="0.4", lw=0.8, ls=":", label=f"real images ({ceiling:.1%})")
    acc.set(ylabel="class accuracy", ylim=(0, 1.02))
    handles = left.get_legend_handles_labels()[0] + acc.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="center right")
    left.grid(alpha=0.3)
    right.plot(t["class_accuracy"], t["fid"], "o-", color="C2")
    for row in t.itertuples():
        right.annotate(f"w={row.guidance_scale:g}", (row.class_accuracy, row.fid), textcoords="offset points",
                       xytext=(4, 4), fontsize=7)  # fmt: skip
    right.axvline(ceiling, color="0.4", lw=0.8, ls=":", label=f"accuracy on real images ({ceiling:.1%})")
    right.set(xlabel="class accuracy", ylabel="FID", title="trade-off: FID against class accuracy", xlim=(0, 1.02))
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def trajectory_figure(columns: Sequence[tuple[int, int]], nfe: int, x_t: np.ndarray, x0: np.ndarray, title: str) -> Image.Image:
    """The reverse process as panels, one per evaluation (i, t) in ``columns``: for each sample, its x_t
    above the x̂0 predicted there. ``x_t``, ``x0``: uint8 (n, K, H, W, C) for K = len(columns)."""
    panels = []
    for k, (i, t) in enumerate(columns):
        pairs = np.stack([x_t[:, k], x0[:, k]], axis=1).reshape(-1, *x_t.shape[2:])  # (2n, H, W, C): x_t, x̂0, x_t, ...
        panels.append(([f"eval {i + 1}/{nfe}", f"t = {t}"], image_grid(pairs, ncol=1)))
    return titled_panels(title, panels)

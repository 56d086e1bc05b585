"""Benchmark: does the evaluator's FID see damage?  Heusel et al. 2017 (fig. 3) disturbances x 4 levels.

Follows the protocol of ``ldmpipe.disturbances``: the evaluate stage's floor images (n =
``sample.n_samples`` seeded train images) under each disturbance at levels 0-4, FID against the
evaluator's stored reference statistics of the validation split; level 0 is the real-vs-real floor.
Needs the outputs of ``dvc repro train_evaluator`` (the prepared data, the evaluator and its
reference) under ``--root``.  Prints the table; writes it, with the evaluator's validation accuracy
and the pass/fail verdict, to ``--out`` (JSON) and a figure (FID against level, one line per
disturbance, the floor as a horizontal line; one example image per disturbance and level) to
``--figure``.

Usage: python benchmarks/bench_disturbances.py [--root .] [--params params.yaml]
       [--out benchmarks/results/disturbances.json] [--figure benchmarks/results/disturbances.png]
       [--before benchmarks/results/disturbances.before.json]

``disturbances.before.json`` is this benchmark on the evaluator of commit 4491d90 (64 pooled top
features, no statistics, no standardisation), run with ``--root`` at that commit's outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ldmpipe import runtime
from ldmpipe.config import load_params
from ldmpipe.disturbances import DISTURBANCES, LEVELS, disturb, fid_table, held_out_real, table_failures
from ldmpipe.evaluation import Reference
from ldmpipe.features import ClassifierExtractor
from ldmpipe.io import load_arrays, save_figure, write_json
from ldmpipe.models.checkpoint import load_model
from ldmpipe.models.classifier import Classifier


def figure(result: dict, examples: np.ndarray, before: dict | None = None):
    """FID against level (log axis) beside a strip of examples: rows disturbances, columns levels 0-4.
    ``before``: another evaluator's result, drawn dashed and faint for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(DISTURBANCES)
    fig = plt.figure(figsize=(10.5, 4.2))
    ax = fig.add_axes([0.07, 0.13, 0.42, 0.77])
    for k, name in enumerate(names):
        ax.plot(range(LEVELS + 1), result["fid"][name], "o-", color=f"C{k}", label=name.replace("_", " "))
        if before is not None:
            ax.plot(range(LEVELS + 1), before["fid"][name], "x:", color=f"C{k}", alpha=0.6)
    ax.axhline(result["floor"], color="k", ls="--", lw=1, label=f"real-vs-real floor ({result['floor']:.2f})")
    if before is not None:
        ax.axhline(before["floor"], color="k", ls=":", lw=1, alpha=0.6,
                   label=f"before (x, dotted): floor {before['floor']:.2f}")  # fmt: skip
    ax.set(xlabel="level (0 = undisturbed)", ylabel="FID", yscale="log", xticks=range(LEVELS + 1),
           title=f"evaluator FID, n = {result['n']} (val. accuracy {result['val_accuracy']:.3f})")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    for r, name in enumerate(names):  # examples (disturbances, levels, H, W, C)
        for c in range(LEVELS + 1):
            sub = fig.add_axes([0.55 + c * 0.085, 0.78 - r * 0.17, 0.08, 0.155])
            sub.imshow(examples[r, c].squeeze(), cmap="gray" if examples.shape[-1] == 1 else None, vmin=0, vmax=255,
                       interpolation="nearest")  # fmt: skip
            sub.set(xticks=[], yticks=[])
            if r == 0:
                sub.set_title(f"level {c}", fontsize=8)
            if c == 0:
                sub.set_ylabel(name.replace("_", "\n"), fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("."), help="folder holding data/ and reports/evaluator.json")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/disturbances.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/disturbances.png"))
    p.add_argument("--before", type=Path, default=None, help="another run's JSON (e.g. the old evaluator's), drawn for comparison")
    args = p.parse_args(argv)
    params = load_params(args.params)
    device = runtime.setup(params.device)
    # 1. the evaluator, its reference, and the evaluate stage's floor images
    model, _ = load_model(Classifier, args.root / "data/evaluator/model.safetensors", device)
    extractor = ClassifierExtractor(model)
    ref = Reference.load(args.root / "data/evaluator/reference.safetensors")
    train = load_arrays(args.root / "data/prepared/train.safetensors")[0]["images"]
    real = held_out_real(train, params.sample.n_samples, params.seed)
    accuracy = json.loads((args.root / "reports/evaluator.json").read_text())["val_accuracy"]
    # 2. FID per disturbance and level
    table = fid_table(lambda x: extractor(x, params.evaluate.batch_size, device)[0], real, ref, params.seed)
    failures = table_failures(table)
    result = {
        "n": len(real), "n_reference": len(ref.features), "feature_dim": int(ref.features.shape[1]),
        "seed": params.seed, "val_accuracy": accuracy, "evaluator": model.config, "levels": DISTURBANCES,
        "floor": table[next(iter(table))][0], "fid": table, "passes": not failures, "failures": failures,
    }  # fmt: skip
    # 3. print, save the table and the figure
    print(f"{'disturbance':<16}" + "".join(f"{f'level {k}':>10}" for k in range(LEVELS + 1)))
    for name, fids in table.items():
        print(f"{name:<16}" + "".join(f"{v:>10.3f}" for v in fids))
    print(f"floor {result['floor']:.3f} at n = {len(real)}; val accuracy {accuracy:.4f}; "
          + ("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures)))  # fmt: skip
    write_json(args.out, result)
    examples = np.stack([np.stack([disturb(real[:1], name, k, params.seed)[0] for k in range(LEVELS + 1)])
                         for name in DISTURBANCES])  # fmt: skip
    before = json.loads(args.before.read_text()) if args.before else None
    save_figure(args.figure, figure(result, examples, before))
    return result


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()

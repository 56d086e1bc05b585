"""The report's sections for a class-conditional model: class accuracy, per-class FID, the guidance sweep.

Each returns Markdown, or "" for an unconditional model (whose metrics hold no ``class_accuracy`` and
whose guidance table has no rows), so the report of an unconditional model is what it was before.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable

from ..config import Params
from ..diffusion.guidance import model_passes


def md_text(s: str) -> str:
    """``s`` as literal Markdown text: a class name is a folder's name, where a ``|`` would split a table cell
    and ``*``, ``_``, `` ` `` or brackets would format or link (CommonMark backslash escapes)."""
    return re.sub(r"([\\|*_`\[\]])", r"\\\1", s)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A Markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else f"{v:{fmt}}"


def drawn_classes(m: dict, classes: list[str]) -> list[str]:
    """The names of the classes sampled, in label order (metrics.json sorts its keys)."""
    return [c for c in classes if c in m.get("fid_per_class", {})]


def class_section(m: dict, classes: list[str]) -> str:
    """Class accuracy beside its ceiling, and per class (``classes``: all names, in label order): n, accuracy,
    FID beside its floor."""
    if "class_accuracy" not in m:
        return ""
    rows = [(md_text(name), str(m["n_per_class"][name]), f"{m['class_accuracy_per_class'][name]:.1%}",
             _num(m["fid_per_class"][name]), _num(m["fid_per_class_real_floor"][name]))
            for name in drawn_classes(m, classes)]  # fmt: skip
    return f"""## Classes

Class-conditional model, sampled with classifier-free guidance at w = {m['guidance_scale']:g}{_autoguided(m)} ({m['nfe']} NFE per
sample: {_passes(m)} per step).
**Class accuracy** {m['class_accuracy']:.2%}: the fraction of samples the evaluator classifies as the class they
were asked for; its ceiling, the evaluator's accuracy on the real validation images of those classes, is
{m['class_accuracy_real']:.2%}. Per-class FID compares a class's samples with its own validation images; it is
biased upwards at these small n, so read it beside its floor (held-out real images of the class, same n).

{table(rows, ("class", "samples", "class accuracy ↑", "FID ↓", "floor (real, same n)"))}"""


def _passes(m: dict) -> str:
    n = model_passes(True, m["guidance_scale"], m.get("autoguidance", 1.0))
    return {1: "one network pass", 2: "two network passes", 3: "three network passes"}[n]


def _autoguided(m: dict) -> str:
    return f" and autoguidance at w_g = {m['autoguidance']:g} (guide: the EMA at step {m['guide_step']})" if "autoguidance" in m else ""


def guidance_section(csv_path: str, figure: str, grid: str, rel: Callable[[str], str], params: Params) -> str:
    """The guidance sweep's table (default w and best FID marked), its trade-off plot and grids."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return ""
    default, best = params.sample.guidance_scale, min(rows, key=lambda r: float(r["fid"]))
    cells = [(f"**{float(r['guidance_scale']):g} (default)**" if float(r["guidance_scale"]) == default
              else f"{float(r['guidance_scale']):g}", r["nfe"],
              f"**{float(r['fid']):.3f}**" if r is best else f"{float(r['fid']):.3f}",
              f"{float(r['class_accuracy']):.1%}", f"{float(r['is_mean']):.3f}") for r in rows]  # fmt: skip
    s = params.sample
    return f"""## Guidance sweep

Classifier-free guidance (Ho & Salimans 2022): out = out_null + w (out_class − out_null) on the network's
output; w = 1 is the plain conditional model (one pass per step), w = 0 the unconditional one, any other w
costs two passes per step. Each row draws the sample stage's {s.n_samples} samples ({s.sampler}, {s.steps}
steps, the same seeds and classes), so its FID is comparable with the metrics above. Best FID: w =
{float(best['guidance_scale']):g} ({float(best['fid']):.3f}).

{table(cells, ("w", "NFE", "FID ↓", "class accuracy ↑", "IS ↑"))}

![guidance]({rel(figure)})

The first samples of each class at every w (the same seeds throughout):

![guidance grids]({rel(grid)})"""

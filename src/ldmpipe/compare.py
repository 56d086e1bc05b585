"""``ldmpipe compare``: the params that differ and the main metrics across revisions.

Revisions are whatever DVC knows: the workspace, commits and experiments, read with DVC's Python
API (``dvc.api.exp_show`` for the rows, ``dvc.api.params_show`` for which columns are params), never
by parsing command output.  The table goes to the terminal and to a Markdown file, with a plot of
FID (and its real-vs-real floor) across the revisions.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .config import ConfigError
from .io import save_figure, write_text

MAIN_METRICS = ("fid", "fid_real_floor", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall")
METRICS_FILE = "reports/metrics.json"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def _commit(repo: str, rev: str) -> str:
    """The full commit id of a git revision (branch, tag, HEAD~2, short id)."""
    r = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                       capture_output=True, text=True)  # fmt: skip
    return r.stdout.strip() or rev


def _missing(v) -> bool:
    return v is None or v == "!" or (isinstance(v, float) and math.isnan(v))


def collect(repo: str = ".", revs: Sequence[str] = (), num: int = 5) -> pd.DataFrame:
    """One row per revision: its differing params and main metrics. No ``revs``: the workspace, the last
    ``num`` commits and their experiments; else exactly the named revisions (commits or experiment names),
    in the order given."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    try:
        rows = dvc.api.exp_show(repo=repo, revs=list(revs) or None, num=num if not revs else 1)
    except (RevError, DvcException) as e:
        raise ConfigError(f"compare: {e} (name git revisions or experiments)") from None
    param_keys = set(_flatten(dvc.api.params_show(repo=repo)))
    named = {_commit(repo, r): r for r in revs}  # label commits with the names the user gave
    records = []
    for row in rows:
        name = row.get("Experiment") or row.get("rev")
        if row.get("typ") == "baseline" and name != "workspace":
            name = named.get(_commit(repo, name), name)
        rec = {"revision": name}
        for col, v in row.items():
            path, _, key = col.rpartition(":")
            if key in param_keys and path in ("", "params.yaml"):
                rec[f"param:{key}"] = None if _missing(v) else v
            elif key in MAIN_METRICS and path in ("", METRICS_FILE):
                rec[key] = None if _missing(v) else float(v)
        records.append(rec)
    if revs:  # exp_show adds the workspace and each commit's experiments: keep the named ones
        records = sorted((r for r in records if r["revision"] in revs), key=lambda r: list(revs).index(r["revision"]))
        if missing := [r for r in revs if r not in {rec["revision"] for rec in records}]:
            raise ConfigError(f"compare: no run found for {', '.join(map(repr, missing))}")
    table = pd.DataFrame.from_records(records).set_index("revision")
    params = [c for c in table if c.startswith("param:")]
    same = [c for c in params if table[c].astype(str).nunique(dropna=False) <= 1]
    table = table.drop(columns=same).rename(columns=lambda c: c.removeprefix("param:"))
    metrics = [m for m in MAIN_METRICS if m in table]
    return table[[c for c in table if c not in metrics] + metrics]


def fid_figure(table: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Revisions are categories (commits and experiments in no order of a variable), so the points are
    # not joined by lines: a line between two experiments would suggest a trend that is not there.
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(table) + 2), 3.2))
    x = range(len(table))
    if "fid" in table:
        ax.plot(x, table["fid"], "o", label="FID (samples)")
        for i, v in zip(x, table["fid"]):
            if not _missing(v):
                ax.annotate(f"{v:.3g}", (i, v), textcoords="offset points", xytext=(6, 0), va="center", fontsize=8)
    if "fid_real_floor" in table:
        ax.plot(x, table["fid_real_floor"], "_", color="gray", markersize=18, mew=2, label="real-vs-real floor")
    ax.set_xticks(list(x), [str(r) for r in table.index], rotation=30, ha="right")
    ax.set_xlim(-0.5, len(table) - 0.2)  # room for the last point's value
    ax.set_ylim(bottom=0)
    ax.set(ylabel="FID", title="FID across revisions")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def compare(repo: str, revs: Sequence[str], num: int, out: str | Path, figure: str | Path) -> pd.DataFrame:
    table = collect(repo, revs, num)
    text = table.to_markdown(floatfmt=".4g")
    print(text)
    rel = os.path.relpath(figure, Path(out).parent)
    write_text(out, f"# Runs compared\n\nParams that differ, and the main metrics (`{METRICS_FILE}`).\n\n{text}\n\n![FID]({rel})\n")
    save_figure(figure, fid_figure(table))
    return table

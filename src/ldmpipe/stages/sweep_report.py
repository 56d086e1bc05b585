"""Stage ``sweep_report``: the sweep's rows as one table and the FID-vs-NFE plot.

Rows in params order: every sampler of ``sweep.samplers`` at every spacing of ``sweep.spacings`` (the
files ``<points>/<sampler>-<spacing>.json``, as dvc.yaml names the matrix entries), then the reference
row (``<points>/reference.json``).  No wall time here: it lives in the sweep's uncached timing files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..config import Params, SweepConfig
from ..io import ArtifactError, save_figure, write_text
from ..plotting import fid_vs_nfe_figure

COLUMNS = ["sampler", "spacing", "steps", "nfe", "fid", "is_mean", "reference", "label"]
REFERENCE = "reference"  # the reference row's file stem


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--points", required=True, help="input: folder of per-entry sweep rows (.json)")
    p.add_argument("--csv", required=True, help=f"output: {', '.join(COLUMNS)} (.csv)")
    p.add_argument("--figure", required=True, help="output: FID against NFE, one line per sampler and spacing (.png)")


def entries(sweep: SweepConfig) -> list[str]:
    """File stems of the sweep's entries, in table order: sampler-major, then the reference."""
    return [f"{name}-{spacing}" for name in sweep.samplers for spacing in sweep.spacings] + [REFERENCE]


def sweep_table(points: Path, stems: list[str]) -> pd.DataFrame:
    """All rows of the named entries, one per (entry, step count), columns ``COLUMNS``."""
    rows = []
    for stem in stems:
        path = points / f"{stem}.json"
        try:
            rows += json.loads(path.read_text(encoding="utf-8"))["rows"]
        except FileNotFoundError:
            raise ArtifactError(f"{path}: file not found (is its sweep stage in dvc.yaml?)") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ArtifactError(f"{path}: not a sweep entry's rows (.json with a 'rows' list)") from None
    return pd.DataFrame(rows, columns=COLUMNS)


def run(args: argparse.Namespace, params: Params) -> None:
    table = sweep_table(Path(args.points), entries(params.sweep))
    write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    save_figure(args.figure, fid_vs_nfe_figure(table))
    sweep, ref = table[~table["reference"]], table[table["reference"]].iloc[0]
    best = sweep.loc[sweep["fid"].idxmin()]
    print(f"sweep_report: {len(table)} rows; best FID {best.fid:.3f}: {best.sampler}, {best.spacing}, "
          f"{best.steps} steps ({best.nfe} NFE)")  # fmt: skip
    print(f"sweep_report: {ref.label}: FID {ref.fid:.3f} ({ref.fid / best.fid:.2f} x the best)")

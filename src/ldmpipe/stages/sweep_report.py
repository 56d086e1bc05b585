"""Stage ``sweep_report``: the sweep's points as one table and the FID-vs-NFE plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..config import Params
from ..io import save_figure, write_text
from ..plotting import fid_vs_nfe_figure

COLUMNS = ["sampler", "steps", "nfe", "fid", "is_mean", "seconds"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--points", required=True, help="input: folder of per-sampler sweep results (.json)")
    p.add_argument("--csv", required=True, help="output: sampler, steps, nfe, fid, is_mean, seconds (.csv)")
    p.add_argument("--figure", required=True, help="output: FID against NFE, one line per sampler (.png)")


def run(args: argparse.Namespace, params: Params) -> None:
    rows = [row for name in params.sweep.samplers
            for row in json.loads((Path(args.points) / f"{name}.json").read_text())["rows"]]  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    save_figure(args.figure, fid_vs_nfe_figure(table))
    best = table.loc[table["fid"].idxmin()]
    print(f"sweep_report: {len(table)} points; best FID {best.fid:.3f} with {best.sampler} at {best.nfe} NFE")

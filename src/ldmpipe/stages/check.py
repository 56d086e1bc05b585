"""Stage ``check``: the whole params file, validated before any other stage runs.

DVC removes a stage's outputs just before it runs the stage's command, so a stage that refuses its
params has already lost them; and a misspelled section (``smaple:``) is read by no stage, so no stage
would refuse it. dvc.yaml's first stage therefore tracks every key of the file and runs this; every
stage comes after it (through ``prepare``, which depends on the stamp). The stamp's content never
changes, so passing reruns nothing downstream. The Snakefile runs the same check in its ``onstart``
hook instead (a rule would rerun every job whenever a param changed), with ``--no-environment``:
a cluster's jobs may have the device that its head node lacks.
"""

from __future__ import annotations

import argparse

from ..config import check_paths, load_params
from ..io import write_text
from ..runtime import select_device

STAMP = "the params file passed ldmpipe check\n"  # the same bytes every time: nothing downstream reruns


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="PARAMS", help="params file (default: params.yaml; or --params)")
    p.add_argument("--params", help="the params file, as every stage takes it")
    p.add_argument("--stamp", help="output: written once the file passes (dvc.yaml's check stage)")
    p.add_argument("--no-environment", action="store_true",
                   help="the file alone, not this machine's device and data paths (Snakemake's head node)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    path = args.file or args.params or "params.yaml"
    params = load_params(path)  # every section and key, and their combinations
    where = ""
    if not args.no_environment:
        check_paths(params)  # the files and folders the params name exist
        where = f" (device {select_device(params.device)})"
    if args.stamp:
        write_text(args.stamp, STAMP)
    print(f"{path}: ok{where}")

"""Training curves through DVCLive, written atomically.

DVCLive logs into a staging folder beside the final one; on success its ``metrics.json`` summary
and ``plots/metrics/*.tsv`` curves are renamed into place.  No timestamps are logged, so the
files are identical run after run.  DVCLive is told not to edit dvc.yaml or create experiments:
the pipeline declares its own outputs, and the same code runs under Snakemake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .io import remove_stale


class _Unlogged:
    """What a non-zero rank of a data-parallel run logs into: nothing (rank 0 writes the curves)."""

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}


@contextlib.contextmanager
def live_logger(directory: str | Path, enabled: bool = True) -> Iterator[Any]:
    if not enabled:
        yield _Unlogged()
        return
    from dvclive import Live

    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, f".{final.name}.tmp")  # staging folders of killed runs
    staging = final.parent / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with Live(str(staging), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            yield live
        for src in sorted(p for p in staging.rglob("*") if p.is_file()):
            dst = final / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def log_step(live: Any, step: int, metrics: dict[str, float], plot: tuple[str, ...] = ("loss",)) -> None:
    """Log the named curves at ``step`` (others go to the summary only)."""
    live.step = step
    for name, value in metrics.items():
        live.log_metric(name, float(value), plot=name in plot)
    live.next_step()

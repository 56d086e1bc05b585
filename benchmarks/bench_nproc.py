"""Wall time of the tiny config's pipeline at ``train.nproc`` 1 and 2 (DDP, gloo on CPU).

For each N, a fresh git + DVC repo of this checkout's pipeline and ``tests/configs/tiny.yaml`` (with
``train.nproc: N``) runs ``dvc repro <stage>`` stage by stage in the order of the DAG; the table gives
each stage's wall time (DVC's own start-up included) and the total. The training stages
(train_vae, train_evaluator, train_diffusion) are the ones N changes; on a 2-core CPU no speed-up is
expected, since the two processes share the two cores (``OMP_NUM_THREADS=1`` each).

    python benchmarks/bench_nproc.py                 # writes benchmarks/results/nproc_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("train_vae", "train_evaluator", "train_diffusion")


def make_repo(path: Path, nproc: int) -> None:
    for name in ("dvc.yaml", "Snakefile", "resources.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "captions", path / "captions")
    params = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    params["train"]["nproc"] = nproc
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git init -q -b main && git config user.email b@b && git config user.name b", path)
    run("dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", path)


def run(cmd: str, cwd: Path) -> str:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # dvc of this interpreter's venv
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{cmd} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def stage_order(path: Path) -> list[str]:
    """The stages of dvc.yaml in an order that respects their dependencies (``dvc dag`` order)."""
    out = run("dvc dag --dot", path)
    lines = [line.strip().rstrip(";") for line in out.splitlines() if line.strip().startswith('"')]
    edges = [tuple(x.strip().strip('"') for x in line.split("->")) for line in lines if "->" in line]
    stages = sorted(line.strip('"') for line in lines if "->" not in line)  # foreach stages as name@key
    done: list[str] = []
    while len(done) < len(stages):
        for s in stages:
            if s not in done and all(a in done for a, b in edges if b == s):
                done.append(s)
                break
    return done


def measure(nproc: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"bench_nproc{nproc}_") as tmp:
        path = Path(tmp)
        make_repo(path, nproc)
        times = {}
        for stage in stage_order(path):
            start = time.perf_counter()
            run(f"dvc repro -s {stage}", path)
            times[stage] = time.perf_counter() - start
            print(f"  nproc {nproc}: {stage:<20} {times[stage]:7.1f} s", flush=True)
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nproc_tiny.json"))
    args = ap.parse_args()
    results = {n: measure(n) for n in (1, 2)}
    rows = [*TRAINING, "total"]
    table = {n: {**{s: t[s] for s in TRAINING}, "total": sum(t.values())} for n, t in results.items()}
    print(f"\ntiny config, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")
    print(f"{'stage':<20}{'nproc 1':>10}{'nproc 2':>10}")
    for r in rows:
        print(f"{r:<20}{table[1][r]:9.1f}s{table[2][r]:9.1f}s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_count": os.cpu_count(), "stages": results, "summary": table}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

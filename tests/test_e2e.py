"""The whole DAG on the tiny config, through `dvc repro` and `snakemake --cores 2`.

One module-scoped pair of temporary git repos: the DVC run is checked for its outputs, for
doing nothing the second time, for rerunning only what a `sample.*` change touches, and for
identical dvc.lock hashes from scratch; the Snakemake run must give the same bytes.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ENV, OUTPUTS, STAGES, TIMED, TIMED_STAGES, make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("dvc"))
    assert ran_stages(sh("dvc repro", repo)) == set(STAGES)
    return repo


@pytest.fixture(scope="module")
def snakemake_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("snakemake"))
    sh("snakemake --cores 2", repo)
    return repo


def test_dvc_repro_writes_every_output(dvc_repo):
    for p in OUTPUTS:
        assert (dvc_repo / p).is_file(), p
    metrics = json.loads((dvc_repo / "reports/metrics.json").read_text())
    for key in ("fid", "fid_real_floor", "is_mean", "is_std", "n_samples", "extractor"):
        assert key in metrics
    assert metrics["n_samples"] == 60 and metrics["extractor"] == "classifier"
    assert metrics["fid"] > 0 and metrics["fid_real_floor"] >= 0 and metrics["is_mean"] >= 1
    report = (dvc_repo / "reports/report.md").read_text()
    figures = ("dataset", "vae_reconstructions", "samples", "fid_vs_nfe", "losses")
    for fig in (f"figures/{f}.png" for f in figures):
        assert f"]({fig})" in report
    assert f"{metrics['fid_real_floor']:.3f}" in report and "sampler: ddim" in report
    assert (dvc_repo / "reports/figures/samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fid" in sh("dvc metrics show", dvc_repo)
    sweep = (dvc_repo / "reports/sweep.csv").read_text().splitlines()
    assert sweep[0] == "sampler,spacing,steps,nfe,fid,is_mean,reference,label" and len(sweep) == 1 + 4 * 2 * 2 + 1
    heun = [row for row in csv.DictReader(sweep) if row["sampler"] == "heun"]
    # two evaluations per step but the last, at either spacing
    assert [(r["spacing"], int(r["steps"]), int(r["nfe"])) for r in heun] == [
        ("leading", 2, 3), ("leading", 4, 7), ("trailing", 2, 3), ("trailing", 4, 7)]  # fmt: skip


def test_second_dvc_repro_does_nothing(dvc_repo):
    out = sh("dvc repro", dvc_repo)
    assert ran_stages(out) == set() and "up to date" in out


def lock_without_timings(repo: Path) -> dict:
    """dvc.lock without the sweep's timing files (wall times); their stages' other outputs stay."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for name in TIMED_STAGES:
        stages[name]["outs"] = [o for o in stages[name]["outs"] if o["path"] not in TIMED]
    return stages


def test_snakemake_gives_the_same_bytes(dvc_repo, snakemake_repo, tmp_path):
    differ = [p for p in OUTPUTS if (dvc_repo / p).read_bytes() != (snakemake_repo / p).read_bytes()]
    assert set(differ) <= TIMED, sorted(set(differ) - TIMED)
    assert "Nothing to be done" in sh("snakemake --cores 2 -n", snakemake_repo)
    # dvc commit records the Snakemake outputs: the lock file equals the one `dvc repro` wrote. In a
    # copy: DVC re-copies the cached files it commits, and Snakemake would then see the new mtime of a
    # large input (> 1 MB: no checksum) as newer than a stage's uncached outputs
    committed = tmp_path / "committed"
    shutil.copytree(snakemake_repo, committed, symlinks=True)
    sh("dvc commit -f", committed)
    assert lock_without_timings(committed) == lock_without_timings(dvc_repo)
    assert len(lock_without_timings(dvc_repo)) == len(STAGES)


def test_rerun_from_scratch_gives_the_same_lock(dvc_repo):
    before = lock_without_timings(dvc_repo)
    assert ran_stages(sh("dvc repro --force", dvc_repo)) == set(STAGES)
    assert lock_without_timings(dvc_repo) == before


def test_sample_change_reruns_only_downstream(dvc_repo):
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(sh("dvc repro", dvc_repo)) == {"sample", "evaluate", "report"}


def test_snakemake_reruns_only_what_a_sample_change_touches(snakemake_repo):
    params = yaml.safe_load((snakemake_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (snakemake_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("snakemake --cores 2 -n", snakemake_repo)
    jobs = set(re.findall(r"^rule (\w+):$", out, flags=re.M)) - {"all"}
    assert jobs == {"sample", "evaluate", "report"}


# --- the sweep: every sampler at both spacings, the reference row, grids, no wall time in cached outputs

SWEEP_ENTRIES = sorted(n.split("@")[1] for n in STAGES if n.startswith("sweep@"))


def sweep_rows(repo: Path) -> list[dict]:
    return list(csv.DictReader((repo / "reports/sweep.csv").read_text().splitlines()))


def test_sweep_has_the_reference_row_and_both_spacings(dvc_repo):
    tiny = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    T, samplers = tiny["diffusion"]["timesteps"], tiny["sweep"]["samplers"]
    assert SWEEP_ENTRIES == sorted(f"{s}-{sp}" for s in samplers for sp in ("leading", "trailing"))
    rows = sweep_rows(dvc_repo)
    sweep = [r for r in rows if r["reference"] == "False"]
    assert {(r["sampler"], r["spacing"], int(r["steps"])) for r in sweep} == {
        (s, sp, n) for s in samplers for sp in ("leading", "trailing") for n in (2, 4)}  # fmt: skip
    (ref,) = [r for r in rows if r["reference"] == "True"]
    assert (ref["sampler"], ref["spacing"], int(ref["steps"]), int(ref["nfe"])) == ("ddpm", "trailing", T, T)
    assert ref["label"] == f"reference: DDPM, all {T} steps" and rows[-1] == ref
    assert all(float(r["fid"]) > 0 and float(r["is_mean"]) >= 1 for r in rows)
    # the spacing changes the samples: leading and trailing rows of one sampler differ
    fid = {(r["sampler"], r["spacing"], r["steps"]): r["fid"] for r in sweep}
    assert all(fid[s, "leading", n] != fid[s, "trailing", n] for s, _, n in fid)
    report = (dvc_repo / "reports/report.md").read_text()
    assert "## Sampler sweep" in report and f"**{ref['label']}**" in report and f"{float(ref['fid']):.3f}" in report
    for stem in [*SWEEP_ENTRIES, "reference"]:
        assert f"](figures/sweep/{stem}.png)" in report


def test_sweep_grids_are_pngs_of_the_expected_size(dvc_repo):
    from PIL import Image

    from ldmpipe.plotting import PANEL_GAP, TEXT_LINE

    tiny = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    side = 4 * (2 * tiny["data"]["image_size"] + 2) + 2  # 16 images: 4 x 4 at 2x scale, 2 px padding
    assert tiny["sweep"]["grid_size"] == 16
    pictures = {}
    for stem, panels in [*((s, len(tiny["sweep"]["steps"])) for s in SWEEP_ENTRIES), ("reference", 1)]:
        path = dvc_repo / f"reports/figures/sweep/{stem}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        with Image.open(path) as img:
            assert img.size == (panels * side + (panels + 1) * PANEL_GAP, 2 * PANEL_GAP + 3 * TEXT_LINE + side), stem
            pictures[stem] = np.asarray(img.convert("RGB"))
    top = PANEL_GAP + 3 * TEXT_LINE
    for stem, pixels in pictures.items():  # the grids hold images, not a blank canvas
        assert pixels[top:, PANEL_GAP : PANEL_GAP + side].std() > 10, stem
    assert not np.array_equal(pictures["ddim-leading"], pictures["ddim-trailing"])


def test_sweep_outputs_are_the_same_bytes_from_both_engines(dvc_repo, snakemake_repo):
    """The cached rows, the table, the plot and the grids; only the uncached timing files may differ."""
    assert TIMED == {f"reports/sweep_timing/{stem}.json" for stem in [*SWEEP_ENTRIES, "reference"]}
    sweep_outputs = {o for name, outs in STAGES.items() if name.startswith("sweep") for o in outs} - TIMED
    assert {"reports/sweep.csv", "reports/sweep/reference.json", "reports/figures/sweep/reference.png"} <= sweep_outputs
    for p in sorted(sweep_outputs):
        assert (dvc_repo / p).read_bytes() == (snakemake_repo / p).read_bytes(), p
    for p in sorted(TIMED):  # wall time per step count, for each engine's run
        timing = json.loads((dvc_repo / p).read_text())
        assert timing and all(v >= 0 for v in timing.values()), p
    cached = [dvc_repo / "reports/sweep.csv", *(dvc_repo / "reports/sweep").glob("*.json")]
    assert not any("seconds" in p.read_text() for p in cached)


def test_sweep_params_rerun_only_their_stages(dvc_repo):
    """sweep.steps reruns the matrix entries, not the (slow) reference; sweep.reference_steps the reverse
    (and either the report, which shows the sweep's params)."""
    path = dvc_repo / "params.yaml"
    original = path.read_text()
    entries = {n for n in STAGES if n.startswith("sweep@")}
    try:
        for key, value, expected in (("steps", [2, 3], {*entries, "report"}),
                                     ("reference_steps", 50, {"sweep_reference", "report"})):  # fmt: skip
            params = yaml.safe_load(original)
            params["sweep"][key] = value
            path.write_text(yaml.safe_dump(params, sort_keys=False))
            status = subprocess.run(["dvc", "status", "--json"], cwd=dvc_repo, env=ENV, capture_output=True, text=True)
            assert status.returncode == 0 and set(json.loads(status.stdout)) == expected, (key, status.stderr)
    finally:
        path.write_text(original)

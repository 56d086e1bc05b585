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

from conftest import CHECK_STAMP, ENV, OUTPUTS, STAGES, TIMED, TIMED_STAGES, copy_run, ran_stages, sh

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def dvc_repo(tiny_run, tmp_path_factory) -> Path:
    run, printed = tiny_run
    assert ran_stages(printed) == set(STAGES)
    return copy_run(run, tmp_path_factory.mktemp("dvc") / "repo")


@pytest.fixture(scope="module")
def snakemake_repo(tiny_snakemake_run, tmp_path_factory) -> Path:
    return copy_run(tiny_snakemake_run, tmp_path_factory.mktemp("snakemake") / "repo")


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


# --- what the tiny run's numbers say (values measured on it in the comments) ------------------------
# A 30-step model is not a good generator: FID cannot tell its samples from an untrained UNet's (28.7
# vs 25.5), so sample quality is checked against generators that are broken outright, and learning
# is checked where it shows after 30 steps: the denoising error and the loss curve.


def tiny_run(repo: Path) -> tuple[dict, dict, np.ndarray]:
    """(params, metrics.json, the samples uint8 (N, H, W, C)) of a pipeline repo."""
    from ldmpipe.io import load_arrays

    params = yaml.safe_load((repo / "params.yaml").read_text())
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    return params, metrics, load_arrays(repo / "data/samples/samples.safetensors")[0]["images"]


def test_metrics_are_in_range_and_the_floor_is_below_the_samples(dvc_repo):
    params, m, samples = tiny_run(dvc_repo)
    classes = json.loads((dvc_repo / "data/prepared/meta.json").read_text())["classes"]
    assert m["n_samples"] == len(samples) == params["sample"]["n_samples"]
    assert all(0 <= m[k] <= 1 for k in ("precision", "recall", "precision_real", "recall_real"))
    assert all(1 <= m[k] <= len(classes) for k in ("is_mean", "is_mean_real"))
    assert all(m[k] >= 0 for k in ("fid", "fid_real_floor", "is_std", "kid_std", "kid_std_real"))
    # held-out real images score better than the samples on every metric (or equal, for a bounded one)
    assert m["fid_real_floor"] < 0.25 * m["fid"]  # 2.93 vs 28.7
    assert m["kid_mean_real"] < m["kid_mean"] - 3 * m["kid_std"]  # -0.19 vs 2.76 +- 0.12
    assert m["kid_mean_real"] < 0.1 * m["kid_mean"]  # unbiased: about 0 for real against real
    assert m["precision_real"] >= m["precision"] and m["precision_real"] >= 0.8  # 0.97 vs 0.42
    assert m["recall_real"] >= m["recall"] and m["recall_real"] >= 0.8  # 0.93 vs 0.0
    assert m["is_mean_real"] > m["is_mean"]  # 1.111 vs 1.019
    # the report quotes these values, each beside its floor on one table row
    rows = (dvc_repo / "reports/report.md").read_text().splitlines()
    for key, floor, fmt in [("fid", "fid_real_floor", ".3f"), ("is_mean", "is_mean_real", ".3f"),
                            ("kid_mean", "kid_mean_real", ".4f"), ("precision", "precision_real", ".3f"),
                            ("recall", "recall_real", ".3f")]:  # fmt: skip
        cells = f"| {m[key]:{fmt}}", f"| {m[floor]:{fmt}}"
        assert any(cells[0] in r and cells[1] in r.split(cells[0], 1)[1] for r in rows), (key, cells)


def test_metrics_are_those_of_the_samples_and_beat_broken_generators(dvc_repo):
    """FID recomputed from the stored samples equals metrics.json's; images a broken pipeline would
    produce score clearly worse: uniform pixel noise (FID 5149), a constant grey image (169), the
    samples with their pixels shuffled, i.e. colours without shapes (1284), and the mean training
    image everywhere, i.e. a collapsed generator (65); the samples: 28.7."""
    from ldmpipe.evaluation import Reference
    from ldmpipe.features import create_extractor
    from ldmpipe.io import load_arrays
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.classifier import Classifier

    _, m, samples = tiny_run(dvc_repo)
    train = load_arrays(dvc_repo / "data/prepared/train.safetensors")[0]["images"]
    classifier, _ = load_model(Classifier, dvc_repo / "data/evaluator/model.safetensors")
    extractor = create_extractor("classifier", classifier=classifier)
    ref = Reference.load(dvc_repo / "data/evaluator/reference.safetensors")

    def fid(images: np.ndarray) -> float:
        return ref.fid(extractor(images, 50, "cpu")[0])

    assert fid(samples) == pytest.approx(m["fid"], rel=1e-6)
    rng = np.random.default_rng(0)
    n, h, w, c = samples.shape
    shuffled = np.stack([s.reshape(h * w, c)[rng.permutation(h * w)].reshape(h, w, c) for s in samples])
    broken = {
        "uniform noise": rng.integers(0, 256, samples.shape, dtype=np.uint8),
        "constant grey": np.full(samples.shape, 128, np.uint8),
        "shuffled pixels": shuffled,
        "mean image": np.repeat(train.mean(0, keepdims=True).round().astype(np.uint8), n, axis=0),
    }
    for name, images in broken.items():
        assert m["fid"] < 0.8 * fid(images), name


def test_samples_are_varied_images_and_the_grid_shows_them(dvc_repo):
    from PIL import Image

    from ldmpipe.io import load_arrays

    params, _, samples = tiny_run(dvc_repo)
    size, channels = params["data"]["image_size"], 3  # shapes are RGB
    _, meta = load_arrays(dvc_repo / "data/samples/samples.safetensors")
    assert (meta["sampler"], meta["steps"]) == (params["sample"]["sampler"], params["sample"]["steps"])
    assert samples.dtype == np.uint8 and samples.shape == (params["sample"]["n_samples"], size, size, channels)
    assert samples.reshape(len(samples), -1).std(1).min() > 10  # every image has contrast (min 31, real 34)
    assert len({s.tobytes() for s in samples}) == len(samples)  # no two alike
    assert samples.astype(np.float64).std(0).mean() > 10  # they differ by more than noise (26; real 48)
    # the grid: the first grid_size samples, ceil(sqrt(g)) columns, each upscaled 2x, 2 px apart
    g = params["sample"]["grid_size"]
    ncol = int(np.ceil(np.sqrt(g)))
    nrow, cell = -(-g // ncol), 2 * size + 2
    with Image.open(dvc_repo / "reports/figures/samples.png") as img:
        assert img.size == (ncol * cell + 2, nrow * cell + 2)
        grid = np.asarray(img.convert("RGB"))
    for i in range(g):
        r, q = divmod(i, ncol)
        tile = grid[2 + r * cell : r * cell + cell, 2 + q * cell : q * cell + cell]  # (2 size, 2 size, 3)
        assert np.array_equal(tile[::2, ::2], samples[i]), i


def test_samples_are_the_stored_models_reverse_process(dvc_repo):
    """The first samples, rebuilt from the stored UNet and autoencoder by the documented recipe: x_T
    from sample i's own seed, `sample.steps` steps of the configured sampler, latents divided by the
    scale factor, decoded. Catches a sample stage that skips the model, the sampler or the unscaling,
    which FID on a 30-step model cannot (such samples score 24-34 here, the real ones 28.7)."""
    import torch

    from ldmpipe import runtime
    from ldmpipe.diffusion import SAMPLERS, sample_loop, sample_generators
    from ldmpipe.generate import schedule_of
    from ldmpipe.images import to_uint8
    from ldmpipe.models.autoencoder import load_autoencoder
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    params, _, samples = tiny_run(dvc_repo)
    s = params["sample"]
    unet, extra = load_model(UNet, dvc_repo / "data/diffusion/model.safetensors")
    vae = load_autoencoder(dvc_repo / "data/vae/model.safetensors")
    kwargs = {"eta": s["eta"]} if s["sampler"] == "ddim" else {}
    sampler = SAMPLERS[s["sampler"]](schedule_of(extra["diffusion"]), prediction=extra["diffusion"]["prediction"],
                                     spacing=s["spacing"], **kwargs)  # fmt: skip
    sampler.set_timesteps(s["steps"])
    n, c = 4, unet.config["in_channels"]
    gens = sample_generators([runtime.stage_seed(params["seed"], f"sample/{i}") for i in range(n)])
    z = sample_loop(unet, sampler, (n, c, unet.config["sample_size"], unet.config["sample_size"]), gens, "cpu",
                    progress=False)  # fmt: skip
    with torch.no_grad():
        rebuilt = to_uint8(vae.decode_latents(z / extra["scale_factor"]))  # (n, H, W, C)
    diff = np.abs(rebuilt.astype(int) - samples[:n].astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())  # rounding of another batch size


def test_the_diffusion_model_learned_to_denoise(dvc_repo):
    """On held-out latents, the EMA model's implied eps-MSE at t = T/4 ... T-1 is 0.41-0.52; an
    untrained UNet (its output layer starts at zero) has 1. The logged loss falls from 0.71 to 0.32."""
    import torch

    from ldmpipe.diffusion import predict_eps
    from ldmpipe.generate import schedule_of
    from ldmpipe.io import load_arrays
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    unet, extra = load_model(UNet, dvc_repo / "data/diffusion/model.safetensors")
    schedule, prediction = schedule_of(extra["diffusion"]), extra["diffusion"]["prediction"]
    x0 = torch.from_numpy(load_arrays(dvc_repo / "data/latents/val.safetensors")[0]["latents"]).float()
    x0 = x0 * extra["scale_factor"]  # (N, z, h, w), unit std
    T, g = schedule.num_timesteps, torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (T // 4, T // 2, 3 * T // 4, T - 1):
            eps = torch.randn(x0.shape, generator=g)
            tt = torch.full((len(x0),), t)
            x_t = schedule.add_noise(x0, eps, tt)
            abar = float(schedule.alphas_cumprod[t])
            mse = (predict_eps(prediction, unet(x_t, tt), x_t, abar) - eps).pow(2).mean().item()
            assert mse < 0.7, (t, mse)
    loss = [float(line.split("\t")[1]) for line in
            (dvc_repo / "reports/train_diffusion/plots/metrics/loss.tsv").read_text().splitlines()[1:]]  # fmt: skip
    assert loss[-1] < 0.6 * loss[0], loss


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


@pytest.mark.slow  # two minutes; the Snakemake run above is a second run from scratch with the same bytes
def test_rerun_from_scratch_gives_the_same_lock(dvc_repo):
    before = lock_without_timings(dvc_repo)
    assert ran_stages(sh("dvc repro --force", dvc_repo)) == set(STAGES)
    assert lock_without_timings(dvc_repo) == before


def test_sample_change_reruns_only_downstream(dvc_repo):
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # guidance_sweep samples as the sample stage does (an unconditional model's table is empty, but DVC
    # cannot make a stage's params depend on diffusion.conditioning)
    # and check, which validates the whole file first (in a second)
    assert ran_stages(sh("dvc repro", dvc_repo)) == {"check", "sample", "evaluate", "guidance_sweep", "report"}


@pytest.mark.parametrize("engine", ["dvc", "snakemake"])
@pytest.mark.parametrize("edit, expected", [
    ("sample.steps: -3", "sample.steps must be a positive integer, got -3"),
    ("smaple.steps: 3", "smaple is not a known key"),  # a section that no stage reads
])  # fmt: skip
def test_bad_params_stop_either_engine_before_an_output_is_touched(engine, edit, expected, dvc_repo, snakemake_repo,
                                                                    tmp_path):  # fmt: skip
    """DVC runs its check stage, Snakemake its onstart hook, before any other stage: one line naming the key,
    a failed run, and every output as it was (DVC removes a stage's outputs before it runs it; only the
    check stage's own stamp goes)."""
    repo = copy_run(dvc_repo if engine == "dvc" else snakemake_repo, tmp_path / "repo")
    before = {p: (repo / p).read_bytes() for p in OUTPUTS if p != CHECK_STAMP}
    status = set(sh("git status --porcelain", repo).splitlines())
    section, rest = edit.split(".", 1)
    key, value = rest.split(": ")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.setdefault(section, {})[key] = int(value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = ["dvc", "repro"] if engine == "dvc" else ["snakemake", "--cores", "1"]
    r = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and f"ldmpipe check: error: {expected}" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert {p: (repo / p).read_bytes() for p in before} == before
    after = set(sh("git status --porcelain", repo).splitlines())
    assert after - status <= {" M params.yaml"} and not any(line.startswith(" D") for line in after)  # nothing deleted


def test_snakemake_reruns_only_what_a_sample_change_touches(snakemake_repo):
    params = yaml.safe_load((snakemake_repo / "params.yaml").read_text())
    params["sample"]["steps"] = 4
    (snakemake_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("snakemake --cores 2 -n", snakemake_repo)
    jobs = set(re.findall(r"^rule (\w+):$", out, flags=re.M)) - {"all"}
    assert jobs == {"sample", "evaluate", "guidance_sweep", "report"}


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
        for key, value, expected in (("steps", [2, 3], {"check", *entries, "report"}),
                                     ("reference_steps", 50, {"check", "sweep_reference", "report"})):  # fmt: skip
            params = yaml.safe_load(original)
            params["sweep"][key] = value
            path.write_text(yaml.safe_dump(params, sort_keys=False))
            status = subprocess.run(["dvc", "status", "--json"], cwd=dvc_repo, env=ENV, capture_output=True, text=True)
            assert status.returncode == 0 and set(json.loads(status.stdout)) == expected, (key, status.stderr)
    finally:
        path.write_text(original)

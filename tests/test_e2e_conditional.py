"""A class-conditional model through the whole DAG on the tiny config, with `dvc repro` and `snakemake`.

The conditional run has the guidance sweep and the per-class metrics; both engines write the same bytes;
`sample.guidance_scale: 1` gives the samples of a loop that never computes the null pass; autoguidance
(`train.guide_step`, `sample.autoguidance`) reaches every sampling stage with its guide. The sampler
sweep is cut to one entry and a 10-step reference to keep this short (test_e2e.py covers the sweep).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_repo, ran_stages, sh

pytestmark = pytest.mark.e2e

GUIDANCE = [0, 1, 1.5]  # 1.5: the tiny params' sample.guidance_scale


def conditional_repo(path: Path) -> Path:
    repo = make_repo(path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["diffusion"]["conditioning"] = "class"
    params["sweep"].update(samplers=["ddim"], spacings=["leading"], reference_steps=10, guidance=GUIDANCE)
    params["train"]["guide_step"] = 20  # a guide stored beside the weights, used only where sample.autoguidance != 1
    assert params["sample"]["guidance_scale"] == 1.5 and params["sample"]["classes"] is None
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> Path:
    repo = conditional_repo(tmp_path_factory.mktemp("dvc_conditional"))
    sh("dvc repro", repo)
    return repo


@pytest.fixture(scope="module")
def snakemake_repo(tmp_path_factory) -> Path:
    repo = conditional_repo(tmp_path_factory.mktemp("snakemake_conditional"))
    sh("snakemake --cores 2", repo)
    return repo


def outputs(repo: Path) -> list[str]:
    """Every output dvc.lock records, but the sweep's wall times (which differ between runs by nature)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return sorted(o["path"] for s in stages.values() for o in s["outs"] if not o["path"].startswith("reports/sweep_timing/"))


def guidance_rows(repo: Path) -> list[dict]:
    return list(csv.DictReader((repo / "reports/guidance.csv").read_text().splitlines()))


def test_conditional_run_has_the_guidance_sweep_and_per_class_metrics(dvc_repo):
    m = json.loads((dvc_repo / "reports/metrics.json").read_text())
    classes = json.loads((dvc_repo / "data/prepared/meta.json").read_text())["classes"]
    assert len(classes) == 5 and m["guidance_scale"] == 1.5 and m["nfe"] == 2 * 5  # two passes per DDIM step
    assert 0 <= m["class_accuracy"] <= 1 and 0 < m["class_accuracy_real"] <= 1
    for key in ("fid_per_class", "fid_per_class_real_floor", "class_accuracy_per_class"):
        assert sorted(m[key]) == sorted(classes), key  # metrics.json sorts its keys
    assert m["n_per_class"] == {name: 12 for name in classes}  # 60 samples, balanced
    assert all(m["fid_per_class"][c] > 0 and m["fid_per_class_real_floor"][c] >= 0 for c in classes)
    rows = guidance_rows(dvc_repo)
    assert [(float(r["guidance_scale"]), int(r["nfe"])) for r in rows] == [(0, 5), (1, 5), (1.5, 10)]
    default = rows[2]  # sampled exactly as the sample stage samples: evaluate's numbers
    assert float(default["fid"]) == pytest.approx(m["fid"], rel=1e-5)
    assert float(default["class_accuracy"]) == pytest.approx(m["class_accuracy"], rel=1e-5)
    assert len({r["fid"] for r in rows}) == 3  # w changes the samples
    sweep = list(csv.DictReader((dvc_repo / "reports/sweep.csv").read_text().splitlines()))
    assert [int(r["nfe"]) for r in sweep] == [4, 8, 20]  # ddim 2 and 4 steps, reference 10 steps: all guided
    report = (dvc_repo / "reports/report.md").read_text()
    assert "## Classes" in report and "## Guidance sweep" in report and "| **1.5 (default)** | 10 |" in report
    assert "](figures/guidance.png)" in report and "](figures/guidance_grids.png)" in report
    assert f"one row per class: {', '.join(classes)}" in report  # in label order, as the grid's rows
    table = report[report.index("## Classes") :]
    assert [table.index(f"| {c} | 12 |") for c in classes] == sorted(table.index(f"| {c} | 12 |") for c in classes)
    from PIL import Image

    with Image.open(dvc_repo / "reports/figures/samples.png") as img:  # 5 rows of 16 // 5 = 3 images (64 px + 2)
        assert img.size == (3 * 66 + 2, 5 * 66 + 2)


def test_snakemake_gives_the_same_bytes(dvc_repo, snakemake_repo):
    paths = outputs(dvc_repo)
    assert {"reports/guidance.csv", "reports/figures/guidance_grids.png", "data/samples/samples.safetensors"} <= set(paths)
    differ = [p for p in paths if (dvc_repo / p).read_bytes() != (snakemake_repo / p).read_bytes()]
    assert differ == []


def test_guidance_scale_1_is_a_run_without_the_null_pass(dvc_repo):
    """w = 1 reruns what samples (not the guidance sweep) and equals a plain conditional sampling loop."""
    import torch

    from ldmpipe import runtime
    from ldmpipe.diffusion.noise import sample_generators
    from ldmpipe.diffusion.sampling import sample_loop
    from ldmpipe.generate import make_sampler, schedule_of
    from ldmpipe.images import to_uint8
    from ldmpipe.io import load_arrays
    from ldmpipe.models.autoencoder import load_autoencoder
    from ldmpipe.models.checkpoint import load_model
    from ldmpipe.models.unet import UNet

    path = dvc_repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["sample"]["guidance_scale"] = 1.0
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", dvc_repo))
    assert ran == {"check", "sample", "evaluate", "sweep@ddim-leading", "sweep_reference", "sweep_report", "report"}
    arrays, meta = load_arrays(dvc_repo / "data/samples/samples.safetensors")
    assert meta["nfe"] == 5 and meta["guidance_scale"] == 1.0
    # the same samples, drawn by a loop that only ever calls the network with the asked-for classes
    device = runtime.setup("cpu")
    unet, extra = load_model(UNet, dvc_repo / "data/diffusion/model.safetensors", device)
    vae = load_autoencoder(dvc_repo / "data/vae/model.safetensors", device)
    d, s = extra["diffusion"], params["sample"]
    sampler = make_sampler(s["sampler"], schedule_of(d), prediction=d["prediction"], spacing=s["spacing"], eta=s["eta"])
    sampler.set_timesteps(s["steps"])
    labels = torch.arange(s["n_samples"]) % 5
    images = []
    for start in range(0, s["n_samples"], s["batch_size"]):
        idx = range(start, min(start + s["batch_size"], s["n_samples"]))
        y = labels[start : idx.stop]
        gens = sample_generators([runtime.stage_seed(params["seed"], f"sample/{i}") for i in idx])
        z = sample_loop(lambda x, t: unet(x, t, y), sampler, (len(idx), 4, 8, 8), gens, device, progress=False)  # noqa: B023
        with torch.no_grad():
            images.append(to_uint8(vae.decode_latents(z / extra["scale_factor"])))
    assert np.array_equal(arrays["labels"], labels.numpy())
    assert np.array_equal(arrays["images"], np.concatenate(images))
    m = json.loads((dvc_repo / "reports/metrics.json").read_text())
    assert float(guidance_rows(dvc_repo)[1]["fid"]) == pytest.approx(m["fid"], rel=1e-5)  # the sweep's w = 1 row


def test_autoguidance_through_the_pipeline(dvc_repo):
    """``train.guide_step`` 20 (the fixture's) stores the EMA that a 20-step run ends with beside the weights;
    ``sample.autoguidance`` 1.5 reruns only what samples, and every sampling stage runs the guide (one more
    pass per step) and says so."""
    import torch

    from ldmpipe.models.checkpoint import load_guide, load_model
    from ldmpipe.models.unet import UNet

    path = dvc_repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    assert params["train"]["guide_step"] == 20
    params["sample"].update(guidance_scale=1.5, autoguidance=1.5)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(sh("dvc repro", dvc_repo))
    assert ran == {"check", "sample", "evaluate", "sweep@ddim-leading", "sweep_reference", "sweep_report", "guidance_sweep",
                   "report"}  # fmt: skip
    model = dvc_repo / "data/diffusion/model.safetensors"
    unet, extra = load_model(UNet, model)
    guide = load_guide(UNet, model)
    assert extra["guide_step"] == 20
    # the guide is, bit for bit, the model of the same stage stopped at step 20
    params["train"].update(steps=20, guide_step=None)
    params["sample"]["autoguidance"] = 1.0  # no guide to sample with: a plain 20-step run
    (dvc_repo / "short.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("ldmpipe train-diffusion --params short.yaml --latents data/latents/train.safetensors --meta data/prepared/meta.json "
       "--model short/model.safetensors --live short/live --val-latents data/latents/val.safetensors "
       "--timestep-error short/te.tsv --timestep-figure short/te.png", dvc_repo)  # fmt: skip
    short, _ = load_model(UNet, dvc_repo / "short/model.safetensors")
    assert all(torch.equal(guide.state_dict()[k], v) for k, v in short.state_dict().items())
    assert not torch.equal(guide.state_dict()["out.2.weight"], unet.state_dict()["out.2.weight"])
    m = json.loads((dvc_repo / "reports/metrics.json").read_text())
    assert (m["autoguidance"], m["guide_step"], m["nfe"]) == (1.5, 20, 3 * 5)  # class, null and guide passes
    assert [int(r["nfe"]) for r in guidance_rows(dvc_repo)] == [10, 10, 15]  # w = 0 and 1: one model pass
    assert float(guidance_rows(dvc_repo)[2]["fid"]) == pytest.approx(m["fid"], rel=1e-5)
    sweep = list(csv.DictReader((dvc_repo / "reports/sweep.csv").read_text().splitlines()))
    assert [int(r["nfe"]) for r in sweep] == [6, 12, 30] and all("autoguidance 1.5" in r["label"] for r in sweep)
    assert "and autoguidance at w_g = 1.5 (guide: the EMA at step 20) (15 NFE" in (dvc_repo / "reports/report.md").read_text()

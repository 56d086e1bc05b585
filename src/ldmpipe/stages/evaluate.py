"""Stage ``evaluate``: FID, IS, KID and precision/recall of the samples, each beside its floor.

The floor is the same metric for ``n`` held-out real images (a seeded subset of the train split,
which the reference from the validation split never saw): what a perfect generator would score
at this sample count.  FID is biased upwards at small n, so compare it with its floor, never with
numbers computed at another n.  The main metrics (``fid``, ``fid_real_floor``, ``is_mean``, ...) use
our trained classifier (offline, any dataset).  With ``evaluate.inception: true`` the same metrics in
the standard FID Inception network's pool3 features stand beside them, named with ``_inception``
(``fid_inception``, ``fid_inception_real_floor``, ``kid_mean_inception``, ...), against that
network's features of the validation split.

Samples of a class-conditional model carry their labels; they add the class accuracy (beside the
evaluator's accuracy on real validation images, its ceiling) and per-class FID (each against its
class's validation images, beside a per-class floor of held-out real images of that class at the same
n), in the classifier's features (`evaluation.class_metrics`).
"""

from __future__ import annotations

import argparse

import numpy as np

from .. import runtime
from ..config import ConfigError, Params
from ..evaluation import MetricSettings, Reference, class_metrics, per_class_subset, score
from ..features import FeatureExtractor, create_extractor
from ..disturbances import held_out_real
from ..io import ArtifactError, load_arrays, write_json
from ..models.checkpoint import load_model
from ..models.classifier import Classifier


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="input: generated images")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: the classifier's reference features of the val split")
    p.add_argument("--val", required=True, help="input: validation arrays (the Inception reference)")
    p.add_argument("--real", required=True, help="input: real images for the floor (train arrays)")
    p.add_argument("--metrics", required=True, help="output: metrics (.json)")


def with_floor(
    extractor: FeatureExtractor, ref: Reference, samples: np.ndarray, real: np.ndarray, settings: MetricSettings,
    batch_size: int, device, suffix: str = "",
) -> dict[str, float]:
    """Metrics of the samples and of ``real`` (the floor) against ``ref``: ``fid{suffix}``, ``kid_mean{suffix}``,
    ... and ``fid{suffix}_real_floor``, ``kid_mean{suffix}_real``, ... (uint8 images (N, H, W, C))."""
    fake = score(*extractor(samples, batch_size, device), ref, settings)
    floor = score(*extractor(real, batch_size, device), ref, settings)
    return {
        **{f"{k}{suffix}": v for k, v in fake.items()},
        **{f"{k}{suffix}_real": v for k, v in floor.items() if k != "fid"},
        f"fid{suffix}_real_floor": floor["fid"],
    }


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluate
    device = runtime.setup(params.device)
    inception = None
    if cfg.inception:  # first, so that missing weights stop the stage before any work
        try:
            inception = create_extractor("inception", inception_weights=cfg.inception_weights)
        except FileNotFoundError as e:
            raise ConfigError(f"evaluate.inception_weights: {e}") from None
    classifier, _ = load_model(Classifier, args.evaluator, device)
    sample_arrays, sample_meta = load_arrays(args.samples)
    samples = sample_arrays["images"]
    real_arrays = load_arrays(args.real)[0]
    n = len(samples)
    try:  # the floor: as many held-out real images as samples
        real = held_out_real(real_arrays["images"], n, params.seed)
    except ValueError as e:
        raise ArtifactError(f"{args.real}: {e}, one per sample for the floor") from None
    settings = MetricSettings(cfg.is_splits, cfg.kid_subsets, cfg.kid_subset_size, cfg.pr_k,
                              runtime.stage_seed(params.seed, "evaluate.kid"))  # fmt: skip

    # 1. the classifier, against its stored features of the val split
    extractor = create_extractor("classifier", classifier=classifier)
    ref = Reference.load(args.reference)
    metrics = with_floor(extractor, ref, samples, real, settings, cfg.batch_size, device)
    metrics.update({
        "n_samples": n,
        "n_reference": len(ref.features),
        "extractor": extractor.name,
        "resize_protocol": extractor.resize_protocol,
        "feature_dim": int(ref.features.shape[1]),
        "is_splits": cfg.is_splits,
        "kid_subsets": cfg.kid_subsets,
        "kid_subset_size": settings.kid_size(n, len(ref.features)),
        "pr_k": cfg.pr_k,
    })  # fmt: skip
    line = f"evaluate: FID {metrics['fid']:.3f} (floor {metrics['fid_real_floor']:.3f})"
    if "labels" in sample_arrays:  # samples of a class model
        metrics.update(conditional_metrics(extractor, ref, sample_arrays, sample_meta, real_arrays, args.val, params, device))
        line += f", class accuracy {metrics['class_accuracy']:.4f} (real: {metrics['class_accuracy_real']:.4f})"
    if "autoguidance" in sample_meta:  # autoguided samples: how, beside the figures
        metrics.update({k: sample_meta[k] for k in ("autoguidance", "guide_step", "nfe")})
    # 2. the FID Inception network beside it, against its own features of the val split
    if inception is not None:
        ref = Reference.from_features(inception(load_arrays(args.val)[0]["images"], cfg.batch_size, device)[0])
        metrics.update(with_floor(inception, ref, samples, real, settings, cfg.batch_size, device, "_inception"))
        metrics.update({"inception_weights": inception.weights, "inception_resize_protocol": inception.resize_protocol})
        rank = " (rank-deficient covariances: compare with the floor only)" if min(n, len(ref.features)) <= 2048 else ""
        line += f"; Inception FID {metrics['fid_inception']:.3f} (floor {metrics['fid_inception_real_floor']:.3f}){rank}"
    write_json(args.metrics, metrics)
    print(f"{line}; classifier KID {metrics['kid_mean']:.4f} (floor {metrics['kid_mean_real']:.4f}), "
          f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, IS {metrics.get('is_mean', float('nan')):.3f}")  # fmt: skip


def conditional_metrics(extractor: FeatureExtractor, ref: Reference, samples: dict, sample_meta: dict, real: dict,
                        val_path: str, params: Params, device) -> dict:  # fmt: skip
    """`class_metrics` of labelled samples; the floor of class k: as many of its train images as samples of k."""
    bs, labels = params.evaluate.batch_size, samples["labels"]
    val = load_arrays(val_path)[0]
    if len(val["labels"]) != len(ref.features):
        raise ArtifactError(f"{val_path}: {len(val['labels'])} images, but the evaluator's reference has {len(ref.features)}")
    features, probs = extractor(samples["images"], bs, device)
    counts = {int(k): int(n) for k, n in zip(*np.unique(labels, return_counts=True))}
    rng = np.random.default_rng(runtime.stage_seed(params.seed, "evaluate.class_floor"))
    floor = per_class_subset(real["labels"], counts, rng)
    floor_features = extractor(real["images"][floor], bs, device)[0] if len(floor) else np.empty((0, ref.features.shape[1]))
    out = class_metrics(labels, features, probs, ref, val["labels"], extractor(val["images"], bs, device)[1],
                        floor_features, real["labels"][floor], sample_meta["classes"])  # fmt: skip
    return {**out, "guidance_scale": sample_meta["guidance_scale"], "nfe": sample_meta["nfe"]}

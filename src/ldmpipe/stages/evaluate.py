"""Stage ``evaluate``: FID, IS, KID and precision/recall of the samples, each beside its floor.

The floor is the same metric for ``n`` held-out real images (a seeded subset of the train split,
which the reference from the validation split never saw): what a perfect generator would score
at this sample count.  FID is biased upwards at small n, so compare it with its floor, never with
numbers computed at another n.  Features come from ``evaluate.extractor``: our trained classifier
(offline, any dataset) or the standard FID Inception network from local weights.
"""

from __future__ import annotations

import argparse

import numpy as np

from .. import runtime
from ..config import ConfigError, Params
from ..evaluation import MetricSettings, Reference, score
from ..features import create_extractor
from ..io import load_arrays, write_json
from ..models.checkpoint import load_model
from ..models.classifier import Classifier


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="input: generated images")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: the classifier's reference features of the val split")
    p.add_argument("--val", required=True, help="input: validation arrays (reference for other extractors)")
    p.add_argument("--real", required=True, help="input: real images for the floor (train arrays)")
    p.add_argument("--metrics", required=True, help="output: metrics (.json)")


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluate
    device = runtime.setup(params.device)
    classifier, _ = load_model(Classifier, args.evaluator, device)
    try:
        extractor = create_extractor(cfg.extractor, classifier=classifier, inception_weights=cfg.inception_weights)
    except FileNotFoundError as e:
        raise ConfigError(f"evaluate.inception_weights: {e}") from None
    samples = load_arrays(args.samples)[0]["images"]
    real = load_arrays(args.real)[0]["images"]
    n = len(samples)
    if n > len(real):
        raise ValueError(f"{args.real}: {len(real)} real images cannot give a floor for {n} samples")
    rng = np.random.default_rng(runtime.stage_seed(params.seed, "evaluate.floor"))
    real = real[np.sort(rng.permutation(len(real))[:n])]

    # 1. reference: the stored classifier features of the val split, or the extractor's own
    if cfg.extractor == "classifier":
        ref = Reference(**load_arrays(args.reference)[0])
    else:
        ref = Reference.from_features(extractor(load_arrays(args.val)[0]["images"], cfg.batch_size, device)[0])
    # 2. the same metrics for the samples and for held-out real images (the floor)
    settings = MetricSettings(cfg.is_splits, cfg.kid_subsets, cfg.kid_subset_size, cfg.pr_k,
                              runtime.stage_seed(params.seed, "evaluate.kid"))  # fmt: skip
    fake = score(*extractor(samples, cfg.batch_size, device), ref, settings)
    floor = score(*extractor(real, cfg.batch_size, device), ref, settings)

    metrics = {
        **fake,
        **{f"{k}_real": v for k, v in floor.items() if k != "fid"},
        "fid_real_floor": floor["fid"],
        "n_samples": n,
        "n_reference": len(ref.features),
        "extractor": extractor.name,
        "resize_protocol": extractor.resize_protocol,
        "feature_dim": int(ref.features.shape[1]),
        "is_splits": cfg.is_splits,
        "kid_subsets": cfg.kid_subsets,
        "kid_subset_size": min(cfg.kid_subset_size, n, len(ref.features)),
        "pr_k": cfg.pr_k,
    }
    write_json(args.metrics, metrics)
    print(f"evaluate ({extractor.name}): FID {fake['fid']:.3f} (floor {floor['fid']:.3f}), "
          f"KID {fake['kid_mean']:.4f} (floor {floor['kid_mean']:.4f}), precision {fake['precision']:.3f}, "
          f"recall {fake['recall']:.3f}, IS {fake.get('is_mean', float('nan')):.3f}")  # fmt: skip

"""Stage ``evaluate``: FID and IS of the samples, and the real-vs-real floor.

The floor is the FID of ``n`` held-out real images (a seeded subset of the train split, which the
reference statistics from the validation split never saw) against the same reference: the
number FID would give a perfect generator at this sample count.  FID is biased upwards at small
n, so compare FID with the floor, never with numbers computed at another n.
"""

from __future__ import annotations

import argparse

import numpy as np

from .. import runtime
from ..config import Params
from ..io import load_arrays, write_json
from ..metrics import extract, feature_statistics, frechet_distance, inception_score
from ..models.checkpoint import load_model
from ..models.classifier import Classifier


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="input: generated images")
    p.add_argument("--evaluator", required=True, help="input: classifier weights")
    p.add_argument("--reference", required=True, help="input: reference feature statistics")
    p.add_argument("--real", required=True, help="input: real images for the floor (train arrays)")
    p.add_argument("--metrics", required=True, help="output: metrics (.json)")


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluate
    device = runtime.setup(params.device)
    model, _ = load_model(Classifier, args.evaluator, device)
    ref, ref_meta = load_arrays(args.reference)
    samples = load_arrays(args.samples)[0]["images"]
    real = load_arrays(args.real)[0]["images"]
    n = len(samples)
    if n > len(real):
        raise ValueError(f"{args.real}: {len(real)} real images cannot give a floor for {n} samples")
    rng = np.random.default_rng(runtime.stage_seed(params.seed, "evaluate.floor"))
    real = real[np.sort(rng.permutation(len(real))[:n])]

    def score(images: np.ndarray) -> tuple[float, float, float]:
        feats, probs = extract(model.features, model.head, images, cfg.batch_size, device)
        mu, sigma = feature_statistics(feats)
        fid = frechet_distance(ref["mu"], ref["sigma"], mu, sigma, sqrt_sigma1=ref["sqrt_sigma"])
        return (fid, *inception_score(probs, cfg.is_splits))

    fid, is_mean, is_std = score(samples)
    floor, is_real_mean, is_real_std = score(real)
    metrics = {
        "fid": fid, "fid_real_floor": floor, "is_mean": is_mean, "is_std": is_std,
        "is_real_mean": is_real_mean, "is_real_std": is_real_std,
        "n_samples": n, "n_reference": int(ref_meta["n"]), "extractor": "classifier",
        "feature_dim": int(ref["mu"].shape[0]), "is_splits": cfg.is_splits,
    }  # fmt: skip
    write_json(args.metrics, metrics)
    print(f"evaluate: FID {fid:.3f} (real floor {floor:.3f}), IS {is_mean:.3f} ± {is_std:.3f} (real {is_real_mean:.3f})")

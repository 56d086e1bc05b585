"""Stage ``evaluate_vae``: reconstruction quality on the validation split and a picture of the latents.

MSE, PSNR, SSIM and rFID (FID of the reconstructions against the originals, with the frozen
evaluator; Rombach et al. 2022, table 8), and for a VQ autoencoder codebook usage and perplexity.
The figure is a 2-D PCA of the validation latents coloured by class.  A stage of its own, so that
training the autoencoder does not wait for (or depend on) the evaluator.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import runtime
from ..autoencoder_metrics import pca_2d, recon_metrics, reconstruct, ssim, vq_metrics
from ..config import Params
from ..features import FeatureExtractor, create_extractor
from ..images import map_batches
from ..io import load_arrays, read_json, save_figure, write_json
from ..metrics import feature_statistics, frechet_distance
from ..models.autoencoder import KINDS, load_autoencoder
from ..models.checkpoint import load_model
from ..models.classifier import Classifier
from ..models.vq import AutoencoderVQ
from ..plotting import latent_pca_figure

BATCH_SIZE = 250


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vae", required=True, help="input: autoencoder weights")
    p.add_argument("--evaluator", required=True, help="input: classifier weights (features for rFID)")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--meta", required=True, help="input: dataset meta (.json), for class names")
    p.add_argument("--metrics", required=True, help="output: reconstruction metrics (.json)")
    p.add_argument("--figure", required=True, help="output: 2-D PCA of the validation latents (.png)")


def rfid(extractor: FeatureExtractor, originals: np.ndarray, recons: np.ndarray, device: torch.device) -> float:
    """FID of reconstructions against their originals (uint8 (N, H, W, C)) in the extractor's features."""
    mu1, sigma1 = feature_statistics(extractor(originals, BATCH_SIZE, device)[0])
    mu2, sigma2 = feature_statistics(extractor(recons, BATCH_SIZE, device)[0])
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def run(args: argparse.Namespace, params: Params) -> None:
    device = runtime.setup(params.device)
    vae = load_autoencoder(args.vae, device)
    classifier, _ = load_model(Classifier, args.evaluator, device)
    val = load_arrays(args.val)[0]
    images, labels = val["images"], val["labels"]
    classes = read_json(args.meta)["classes"]
    kind = KINDS[type(vae)]

    # 1. reconstructions and their quality
    recons = reconstruct(vae, images, device)
    metrics = {"kind": kind, **recon_metrics(images, recons), "val_ssim": ssim(images, recons)}
    metrics["rfid"] = rfid(create_extractor("classifier", classifier=classifier), images, recons, device)
    if isinstance(vae, AutoencoderVQ):
        metrics.update(vq_metrics(vae, images, device))
    # 2. the latent space: PCA of the validation latents, coloured by class
    z = map_batches(lambda x: vae.encode_latents(x).cpu().double().numpy(), images, BATCH_SIZE, device)
    points, explained = pca_2d(z)
    metrics.update(n_val=len(images), pca_explained_variance=explained)
    save_figure(args.figure, latent_pca_figure(points, labels, classes, explained, title=f"{kind} latents, validation"))
    write_json(args.metrics, metrics)
    extra = (f", codebook usage {metrics['codebook_usage']:.3f}, perplexity {metrics['perplexity']:.1f}"
             if kind == "vq" else "")  # fmt: skip
    print(f"evaluate_vae ({kind}): MSE {metrics['val_mse']:.5f}, PSNR {metrics['val_psnr']:.2f} dB, "
          f"SSIM {metrics['val_ssim']:.4f}, rFID {metrics['rfid']:.3f}{extra}")  # fmt: skip

"""Stage ``train_evaluator``: the frozen feature network for FID/IS, and reference statistics.

After training, with ``evaluator.standardise``, the features are z-scored with their statistics
over the (unaugmented) training images (``Classifier.standardise_``).  The reference is the
features of the real validation images (for KID and precision/recall) with their float64 mean and
covariance, plus the covariance's square root so each FID costs one eigendecomposition.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from .. import distributed, runtime
from ..config import Params, to_dict
from ..io import load_arrays, save_arrays, write_json
from ..images import map_batches, tensor_to_model_input
from ..evaluation import Reference
from ..metrics import extract
from ..models.checkpoint import save_model
from ..models.classifier import Classifier
from ..training import TrainSettings, batch_indices, checkpointing, train_loop


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="input: train arrays")
    p.add_argument("--val", required=True, help="input: validation arrays")
    p.add_argument("--model", required=True, help="output: classifier weights (.safetensors)")
    p.add_argument("--reference", required=True, help="output: reference feature statistics (.safetensors)")
    p.add_argument("--metrics", required=True, help="output: validation accuracy (.json)")


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift the batch (B, C, H, W) by up to 2 pixels (no flips: they change digits' classes)."""
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def run(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluator
    device = runtime.setup(params.device)
    shard = distributed.init(device, params.train.nproc)  # one process, or this rank of torchrun's (train.nproc)
    train, train_meta = load_arrays(args.train)
    val, _ = load_arrays(args.val)
    images = runtime.resident(torch.from_numpy(train["images"]), device)  # (N, H, W, C) uint8
    labels = runtime.resident(torch.from_numpy(train["labels"]), device)  # (N,)
    num_classes = len(train_meta["classes"])
    torch.manual_seed(runtime.stage_seed(params.seed, "train_evaluator.init"))
    model = Classifier(images.shape[-1], num_classes, cfg.channels, cfg.feature_dim,
                       stat_blocks=cfg.stat_blocks, standardise=cfg.standardise).to(device)  # fmt: skip
    gen = runtime.generator(params.seed, "train_evaluator.batches")
    batches = batch_indices(len(images), cfg.batch_size, gen)  # global batches: the same on every rank
    net = distributed.wrap(model, shard)

    def loss_fn(step: int):
        idx = runtime.to_device(shard.take(next(batches)), images.device)  # this rank's slice of the global batch
        x = augment(tensor_to_model_input(runtime.to_device(images[idx], device)), gen)  # one shift per global batch
        logits = net(x)
        loss = F.cross_entropy(logits, runtime.to_device(labels[idx], device))
        return loss, {"loss": loss.detach()}

    settings = TrainSettings(steps=cfg.steps, lr=cfg.lr, warmup_steps=min(50, cfg.steps // 10), grad_clip=1.0,
                             log_every=max(1, cfg.steps // 20))  # fmt: skip
    config = {"seed": params.seed, "evaluator": to_dict(cfg), "nproc": params.train.nproc}
    ckpt = checkpointing("train_evaluator", params.train.checkpoint_every, config, [args.train])
    train_loop(model, loss_fn, settings, desc="train_evaluator", checkpointing=ckpt,
               extra_state={"generator": gen, "batches": batches}, shard=shard)  # fmt: skip
    if not shard.main:  # only rank 0 evaluates and writes
        distributed.barrier(shard)
        return
    if cfg.standardise:
        raw = map_batches(lambda x: model.raw_features(x).cpu().double().numpy(), train["images"], 500, device)
        model.standardise_(torch.from_numpy(raw))  # raw (N_train, dim) float64 on the CPU
    feats, probs = extract(model.features, model.head, val["images"], 500, device)
    accuracy = float((probs.argmax(1) == val["labels"]).mean())
    save_model(model, args.model)
    save_arrays(args.reference, Reference.from_features(feats).arrays(), {"n": len(feats)})
    write_json(args.metrics, {"val_accuracy": accuracy, "feature_dim": model.dim, "n_reference": len(feats)})
    ckpt.discard()
    print(f"train_evaluator: validation accuracy {accuracy:.4f} over {len(feats)} images")
    distributed.barrier(shard)

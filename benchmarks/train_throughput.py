"""Diffusion training throughput and peak memory: the UNet of a params file on the latents that the
pipeline encoded, with the training stage's own loss, optimiser and precision (``train.bf16``).

After ``--warmup`` untimed steps, ``--steps`` steps are timed between two device synchronisations;
images/s = steps x train.batch_size / seconds.  Peak memory is ``torch.cuda.max_memory_allocated``
over the timed steps (CUDA only).  One process (the data-parallel launcher is the pipeline's).

Usage: python benchmarks/train_throughput.py --params params.yaml --latents data/latents/train.safetensors
       [--device cuda] [--steps 100] [--warmup 10]        # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ldmpipe import runtime
from ldmpipe.config import load_params, to_dict
from ldmpipe.diffusion.loss import diffusion_loss
from ldmpipe.diffusion.schedule import NoiseSchedule
from ldmpipe.io import load_arrays
from ldmpipe.stages.train_diffusion import build_unet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--latents", default="data/latents/train.safetensors")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (inductor; compiled in the warm-up)")
    a = p.parse_args()
    params = load_params(a.params)
    cfg, d = params.train, params.diffusion
    device = runtime.setup(a.device)
    arrays, meta = load_arrays(a.latents)
    data = runtime.resident(torch.from_numpy(arrays["latents"]).float().mul_(float(meta["scale_factor"])), device)
    unet = build_unet(params.unet, data.shape[1], data.shape[2]).to(device)  # the stage's UNet (unconditional)
    schedule = NoiseSchedule.from_params(to_dict(d))
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    net = torch.compile(unet) if a.compile else unet
    gen = runtime.generator(params.seed, "benchmark")
    gamma = d.min_snr_gamma if d.loss_weighting == "min_snr" else None

    def step() -> None:
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x0 = runtime.to_device(data[runtime.to_device(idx, data.device)], device)  # (B, z, h, w)
        with runtime.autocast(device, cfg.bf16):
            loss = diffusion_loss(net, schedule, x0, gen, prediction=d.prediction, min_snr_gamma=gamma,
                                  timestep_sampling=d.timestep_sampling)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(a.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({
        "train_images_per_s": round(a.steps * cfg.batch_size / seconds, 1), "train_steps": a.steps,
        "batch_size": cfg.batch_size, "compile": a.compile, "device": device.type, "bf16": bool(cfg.bf16 and device.type == "cuda"),
        "peak_memory_mib": None if peak is None else round(peak, 1),
        "unet_parameters": sum(q.numel() for q in unet.parameters()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

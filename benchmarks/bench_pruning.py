"""Benchmarks of pruning c, reported as ratios measured side by side in one run.

Run:
    .venv/bin/python benchmarks/bench_pruning.py [--repeats 9] [--images 64] [--steps 10]

The machine is shared and noisy, so absolute times mean little: each comparison times its two sides
alternately (A B, B A, ...) after a warm-up, takes the median of the repeats and reports the ratio. The script
always exits 0 (it is a benchmark, not a test); it prints PASS/FAIL against the target.

1. Mask overhead. ``sampling.sample`` on the shipped ``mnist-dit`` with and without a per-sample tail mask
   (τ = the median |c| at t₀), same labels, seed, steps, CFG and batch; once with the mask at every step and
   once with the last-k schedule (which also looks the timestep up). mnist-dit is tiny (1.3M parameters, 49
   tokens), so the hook's fixed cost per call weighs more here than on any real model: this is the worst case.
   Target: masked / unmasked time <= 1.03.
2. What a sparse c saves in the adaLN projection (the paper's Fig. 42 says "faster", with no numbers). Dense
   ``Linear(D, 6D)`` on silu(c) against ``adaln_cost.compact_projection`` on the kept coordinates (with the gather
   c[:, kept] counted), at the DiT-XL/2 shape (D = 1152, CFG batch 2 x 128) and at mnist-dit's (D = 128), for
   Table 2's removed fractions (38.94% and 66.21%), timed by ``adaln_cost.projection_ratio`` (the pruning chapter's
   measurement). Random weights: only shapes matter. No target; the ratio and the projection's share of a
   DiT-XL/2 forward (FLOPs, ``adaln_cost.adaln_flop_share``) are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package is used from the repo, not installed

from bench_core import alternate, verdict  # the timing helpers, shared with the core benchmark (same folder)

from bottleneck_utils import adaln_cost, masks
from bottleneck_utils.models import load
from bottleneck_utils.sampling import balanced_labels, sample

# ---------------------------------------------------------------------------------------------------
#                                   1. Masked vs unmasked sampling
# ---------------------------------------------------------------------------------------------------


def bench_mask_overhead(repeats: int, num_images: int, num_steps: int, last_k: int) -> None:
    bundle = load("mnist-dit")
    tau = masks.reference_magnitudes(bundle, num_steps, "per-sample").median().item()
    mask = masks.tail_mask(bundle, tau, num_steps=num_steps, granularity="per-sample")
    labels = balanced_labels(bundle.num_classes, num_images)

    def run(mask=None, schedule="every"):
        return lambda: sample(bundle, labels, num_steps=num_steps, cfg_scale=4.0, seed=0, batch_size=num_images,
                              mask=mask, schedule=schedule, progress=False)

    sides = {"unmasked": run(), "every step": run(mask), f"last {last_k}": run(mask, masks.Schedule("last", last_k))}
    medians, _, results = alternate(sides, repeats)
    print(f"[1] sampling {num_images} mnist-dit images, {num_steps} DDIM steps, CFG 4, one batch; per-sample tail "
          f"mask τ={tau:.4f} ({mask.removed_count:.1f} of {bundle.hidden_size} coordinates on average)")
    changed = (results["every step"] - results["unmasked"]).abs().max().item()
    print(f"    the mask changes the samples (max |Δpixel| = {changed:.3f}); unmasked run: {medians['unmasked']:.3f} s")
    for name in ("every step", f"last {last_k}"):
        ratio = medians[name] / medians["unmasked"]
        print(f"    {name:>10} / unmasked time: {ratio:6.3f}  (median of {repeats})  "
              f"{verdict(ratio <= 1.03)}  overhead <= 3%")


# ---------------------------------------------------------------------------------------------------
#                          2. The adaLN projection: dense c vs the kept columns
# ---------------------------------------------------------------------------------------------------


def bench_adaln(repeats: int) -> None:
    print("[2] adaLN projection: gather c[:, kept] + Linear(|kept|, 6D) over the dense Linear(D, 6D)")
    torch.manual_seed(0)
    for name, hidden, batch in (("DiT-XL/2", adaln_cost.DIT_XL["hidden"], 256), ("mnist-dit", 128, 512)):
        linear = torch.nn.Linear(hidden, 6 * hidden)  # random weights: only the shapes matter
        for fraction in (0.3894, 0.6621):
            removed = adaln_cost.random_removed(hidden, fraction)
            ratio = adaln_cost.projection_ratio(linear, removed, batch, rounds=repeats, inner=20)
            print(f"    {name:>9} D={hidden:4d} batch {batch}, {fraction:.2%} removed: sparse / dense time "
                  f"{ratio:5.2f}  (ideal {1 - fraction:.2f})")
    share = adaln_cost.adaln_flop_share(**adaln_cost.DIT_XL)
    print(f"    the adaLN projections are {share:.2%} of a DiT-XL/2 forward's FLOPs (256 tokens, 28 blocks): "
          "that bounds what pruning c can save")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per side (median reported)")
    parser.add_argument("--images", type=int, default=64, help="images per sampling run (one batch)")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps")
    parser.add_argument("--last-k", type=int, default=3, help="k of the last-k schedule")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sides timed alternately, medians reported")
    bench_mask_overhead(args.repeats, args.images, args.steps, args.last_k)
    bench_adaln(args.repeats)


if __name__ == "__main__":
    main()

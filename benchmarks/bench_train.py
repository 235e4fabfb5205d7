"""Trainer throughput of a ladder rung, as achieved FLOP/s over this machine's measured matmul peak.

Run:
    .venv/bin/python benchmarks/bench_train.py [--rung ladder/c10] [--repeats 5] [--threads 1]

One training step (forward, backward, AdamW, EMA) of the rung's recipe is counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention; elementwise work is not counted, so the ratio
is a lower bound). The peak is a float32 (and bfloat16) 1024×1024 matmul on the same threads. Variants are timed
side by side, interleaved (bench_core's ``alternate``), and each prints its steps/s relative to the plain float32
step and its FLOP/s over the float32 peak:

    float32 (the trainer's step) | bfloat16 autocast | torch.compile | batch 64 | batch 256

and then where the float32 step's time goes, as shares of its profiled CPU time (matmul, attention, layer norm,
optimizer, elementwise). ``--rung`` takes a ladder rung or an in-regime replicate (``regime/d256-p6-b64-s0``).
The script always exits 0 (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package is used from the repo, not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import alternate

from bottleneck_utils.organisms import composite, recipes, train


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a size×size matmul in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    seconds, _, _ = alternate({"matmul": lambda: a @ b}, repeats)
    return 2 * size**3 / seconds["matmul"]


def training_step(recipe: dict, batch_size: int, autocast: bool = False, compiled: bool = False):
    """A closure running one trainer step (the loop body of ``train.train_dit``) on random composite data."""
    model = train.build_transformer(recipe.transformer, seed=0).train()
    ema = train.build_transformer(recipe.transformer, seed=0).eval()
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0)
    cell = recipe.cell  # the rung's digit size, so the canvas divides by its patch
    source = composite.CompositeDigits(torch.rand(1000, 1, cell, cell), torch.randint(10, (1000,)), recipe.classes)
    generator = torch.Generator().manual_seed(0)

    def step():
        x0, y = source.draw(generator, batch_size)
        x_t, t, target = train.noisy_batch(recipe, x0, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.mse_loss(forward(x_t, timestep=t, class_labels=y).sample.float(), target)
        train.update(model, ema, optimizer, loss, recipe.ema_decay)

    return step


def step_flops(step) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


OP_KINDS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
            "attention": ("aten::_scaled_dot_product",), "layer norm": ("aten::native_layer_norm",),
            "optimizer (AdamW, EMA)": ("Optimizer.", "aten::_foreach", "aten::lerp")}


def time_by_kind(step, repeats: int) -> dict[str, float]:
    """Share of one step's self CPU time per kind of op (:data:`OP_KINDS`; the rest is elementwise work: GELU,
    products, sums, copies), from ``torch.profiler`` over ``repeats`` steps after one warm-up."""
    step()
    with torch.profiler.profile() as profile:
        for _ in range(repeats):
            step()
    totals = {kind: 0.0 for kind in [*OP_KINDS, "elementwise and other"]}
    for event in profile.key_averages():
        kind = next((k for k, prefixes in OP_KINDS.items() if event.key.startswith(prefixes)), "elementwise and other")
        totals[kind] += event.self_cpu_time_total
    return {kind: value / sum(totals.values()) for kind, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rung", default="ladder/c10", choices=sorted(recipes.RUNGS | recipes.REGIME))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = recipes.recipe_of(args.rung)
    batch = recipe.batch_size
    variants = {"float32": (batch, False, False), "bfloat16 autocast": (batch, True, False),
                "torch.compile": (batch, False, True), "batch 64": (64, False, False), "batch 256": (256, False, False)}
    steps = {name: training_step(recipe, *config) for name, config in variants.items()}
    flops = {name: step_flops(training_step(recipe, *config)) for name, config in variants.items()}
    seconds, _, _ = alternate(steps, args.repeats)
    peak = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    print(f"{args.rung}: {args.threads} thread(s); matmul peak float32 {peak['float32'] / 1e9:.1f} GFLOP/s, "
          f"bfloat16 {peak['bfloat16'] / 1e9:.1f} GFLOP/s")
    base = variants["float32"][0] / seconds["float32"]  # samples/s of the trainer's own step
    for name, (batch_size, _, _) in variants.items():
        samples_per_s = batch_size / seconds[name]
        print(f"  {name:18s} {samples_per_s / base:5.2f}× samples/s of float32   "
              f"{flops[name] / seconds[name] / peak['float32']:6.1%} of the float32 matmul peak")
    shares = time_by_kind(training_step(recipe, batch), args.repeats)
    print("  where the float32 step's time goes: " + ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items()))


if __name__ == "__main__":
    main()

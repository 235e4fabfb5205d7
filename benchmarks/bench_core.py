"""Benchmarks of two hot paths of ``bottleneck_utils``, reported as ratios measured side by side in one run.

Run:
    .venv/bin/python benchmarks/bench_core.py [--repeats 5] [--sampler-repeats 9]

The machine is shared and noisy, so absolute times mean little: each comparison times its two sides
alternately (A B, B A, A B, ...) after a warm-up, takes the median of the repeats, and reports the ratio.
The script always exits 0 (it is a benchmark, not a test); it prints PASS/FAIL against the targets.

1. Timestep sweep of the mean off-diagonal cosine, XL shape (1000 classes x 1152 dims x 1000 timesteps).
   Inputs are a randomly initialised diffusers ``CombinedTimestepLabelEmbeddings(1000, 1152)`` wrapped in an
   embedder-only ``Bundle``: y = its label table (re-drawn as N(0, 0.02^2), DiT's init), t = its sinusoid -> MLP
   (default init) fed the integer timesteps 0..999, both read through ``bottleneck_utils.embeddings``.
     * identity path: ``stats.mean_offdiag_cosine_sweep(y, t)``, all 1000 timesteps, O(T.n.d);
     * pairwise path: per timestep, c = y + t_k, the full n x n ``stats.cosine_matrix(c)``, mean of its
       off-diagonal entries. It is slow, so it runs on a subset of timesteps and its per-timestep cost is
       extrapolated to 1000.
   Targets: identity >= 50x faster, identity <= 2 s, both equal within 1e-5 on the shared timesteps.

2. ``sampling.sample`` vs diffusers ``DiTPipeline``, same tiny random latent model (DiTTransformer2DModel with
   num_embeds_ada_norm=1000 so the pipeline's hard-coded null class 1000 exists, 4 -> 8 channels (learned
   sigma), tiny AutoencoderKL, DDIMScheduler), same labels, steps, CFG scale and batch. Both sides run CFG as
   one doubled batch per step; in this diffusers version both guide all 4 latent channels. Their noise differs
   (per-sample seeds vs one generator), so only speed is compared. Target: ours / pipeline images/s >= 1.0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package is used from the repo, not installed

from bottleneck_utils import embeddings, stats
from bottleneck_utils.models import DDPM, Bundle, block_embedders, tie_embedder_copies
from bottleneck_utils.sampling import sample

# ---------------------------------------------------------------------------------------------------
#                                           Timing helpers
# ---------------------------------------------------------------------------------------------------


def timed(fn):
    """Runs ``fn()`` once; returns (seconds, result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def alternate(sides: dict, repeats: int, warmup: bool = True) -> tuple[dict, dict, dict]:
    """Times each side ``repeats`` times, interleaved, the order flipped every round (A B, B A, A B, ...).

    Returns ({name: median seconds}, {name: min seconds}, {name: result of its last run}).
    """
    if warmup:
        for fn in sides.values():
            fn()
    seconds = {name: [] for name in sides}
    results = {}
    for round_ in range(repeats):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            elapsed, results[name] = timed(sides[name])
            seconds[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    minima = {name: min(values) for name, values in seconds.items()}
    return medians, minima, results


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---------------------------------------------------------------------------------------------------
#                             1. Off-diagonal cosine sweep: identity vs pairwise
# ---------------------------------------------------------------------------------------------------


def xl_embeddings(num_classes=1000, hidden=1152, num_timesteps=1000, seed=0):
    """y (n, d) and t (T, d) from a random XL-shaped embedder, through ``bottleneck_utils.embeddings``."""
    torch.manual_seed(seed)
    embedder = CombinedTimestepLabelEmbeddings(num_classes, hidden).eval()
    torch.nn.init.normal_(embedder.class_embedder.embedding_table.weight, std=0.02)
    bundle = Bundle(name="random-xl", embedder=embedder, num_classes=num_classes, time=DDPM)
    y = embeddings.class_embeddings(bundle)  # (n, d)
    t = embeddings.timestep_embeddings(bundle, torch.arange(num_timesteps))  # (T, d)
    return y, t


def pairwise_sweep(y: torch.Tensor, t: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine at the timesteps ``steps`` through the full n x n cosine matrix."""
    off_diagonal = ~torch.eye(len(y), dtype=torch.bool)
    return torch.stack([stats.cosine_matrix(y + t[k])[off_diagonal].mean() for k in steps.tolist()])


def bench_cosine_sweep(repeats: int, subset: int) -> None:
    y, t = xl_embeddings()
    steps = torch.linspace(0, len(t) - 1, subset).round().long()  # evenly spaced subset for the slow path
    medians, _, results = alternate(
        {
            "identity": lambda: stats.mean_offdiag_cosine_sweep(y, t),
            "pairwise": lambda: pairwise_sweep(y, t, steps),
        },
        repeats,
    )
    identity_s = medians["identity"]
    pairwise_s = medians["pairwise"] / subset * len(t)  # extrapolated to all timesteps
    ratio = pairwise_s / identity_s
    max_diff = (results["identity"][steps] - results["pairwise"]).abs().max().item()

    print(f"[1] mean off-diagonal cosine sweep: {len(y)} classes x {y.shape[1]} dims x {len(t)} timesteps")
    print("    inputs: random CombinedTimestepLabelEmbeddings(1000, 1152), y ~ N(0, 0.02^2), t = MLP(sinusoid(0..999))")
    print(
        f"    mean cosine at t=999: {results['identity'][-1].item():.6f}, at t=0: {results['identity'][0].item():.6f}"
    )
    print(f"    identity path, all {len(t)} timesteps:        {identity_s:8.3f} s (median of {repeats})")
    per_step_ms = medians["pairwise"] / subset * 1e3
    print(
        f"    pairwise path, extrapolated to {len(t)}:      {pairwise_s:8.3f} s "
        f"(measured on {subset} timesteps: {medians['pairwise']:.3f} s, {per_step_ms:.1f} ms each)"
    )
    print(f"    speed ratio pairwise / identity:        {ratio:8.1f}x")
    print(f"    max |identity - pairwise| on {subset} timesteps: {max_diff:.2e}")
    print(f"    {verdict(ratio >= 50)}  identity >= 50x faster than pairwise ({ratio:.1f}x)")
    print(f"    {verdict(identity_s <= 2.0)}  identity sweep <= 2 s ({identity_s:.3f} s)")
    print(f"    {verdict(max_diff <= 1e-5)}  equal within 1e-5 ({max_diff:.2e})")


# ---------------------------------------------------------------------------------------------------
#                                2. Our sampler vs diffusers DiTPipeline
# ---------------------------------------------------------------------------------------------------


def tiny_transformer() -> DiTTransformer2DModel:
    """A 2-layer, 2 x 32-head DiT on 8 x 8 x 4 latents, learned sigma (8 output channels), 1000 classes."""
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    tie_embedder_copies(transformer)  # like a converted checkpoint: every block holds the same copy of the embedder
    return transformer.eval()


def tiny_vae() -> AutoencoderKL:
    """A one-downsample AutoencoderKL: 4-channel 8 x 8 latents <-> 3-channel 16 x 16 images."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=16,
    ).eval()


def ddim() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


def bench_sampler(repeats: int, num_images: int, num_steps: int, cfg: float) -> None:
    torch.manual_seed(0)
    transformer, vae = tiny_transformer(), tiny_vae()
    bundle = Bundle(
        name="tiny-dit",
        embedder=block_embedders(transformer)[0],
        num_classes=transformer.config.num_embeds_ada_norm,
        time=DDPM,
        transformer=transformer,
        scheduler=ddim(),
        vae=vae,
    )
    pipeline = DiTPipeline(transformer=transformer, vae=vae, scheduler=ddim())
    pipeline.set_progress_bar_config(disable=True)
    labels = [(7 * i) % 1000 for i in range(num_images)]

    def ours():
        return sample(bundle, labels, num_steps=num_steps, cfg_scale=cfg, seed=0, batch_size=num_images, progress=False)

    def theirs():
        generator = torch.Generator().manual_seed(0)
        return pipeline(
            class_labels=labels,
            guidance_scale=cfg,
            generator=generator,
            num_inference_steps=num_steps,
            output_type="np",
        ).images

    medians, minima, results = alternate({"ours": ours, "pipeline": theirs}, repeats)
    ours_ips, theirs_ips = num_images / medians["ours"], num_images / medians["pipeline"]
    ratio = ours_ips / theirs_ips

    print(
        f"[2] sampling {num_images} images, {num_steps} DDIM steps, CFG {cfg:g}, batch {num_images}: tiny random DiT "
        f"(2 layers, 2x32 heads, 8x8x4 latents, patch 2, 4->8 ch) + tiny AutoencoderKL (16x16 images)"
    )
    ours_images, their_images = results["ours"], torch.from_numpy(results["pipeline"])
    print(
        f"    output: ours {tuple(ours_images.shape)} (N,C,H,W), pipeline {tuple(their_images.shape)} (N,H,W,C); "
        f"all finite: {bool(ours_images.isfinite().all())}, {bool(their_images.isfinite().all())}"
    )
    print(f"    bottleneck_utils.sampling.sample: {ours_ips:8.1f} images/s ({medians['ours']:.3f} s, median)")
    print(f"    diffusers DiTPipeline:            {theirs_ips:8.1f} images/s ({medians['pipeline']:.3f} s, median)")
    print(f"    ratio ours / pipeline:            {ratio:8.2f}  (of medians, {repeats} runs each)")
    fastest = minima["pipeline"] / minima["ours"]
    print(f"    ratio of the fastest runs:        {fastest:8.2f}  (for information: the least disturbed runs)")
    print(f"    {verdict(ratio >= 1.0)}  ours at least as fast as DiTPipeline ({ratio:.2f})")


# ---------------------------------------------------------------------------------------------------
#                                                 main
# ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per side of the sweep (median reported)")
    parser.add_argument(
        "--sampler-repeats", type=int, default=9, help="timed repeats per side of the sampler (each run is ~1 s)"
    )
    parser.add_argument("--subset", type=int, default=20, help="timesteps the slow pairwise path is timed on")
    parser.add_argument("--images", type=int, default=32, help="images per sampling run (one batch)")
    parser.add_argument("--steps", type=int, default=25, help="sampling steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sides timed alternately, medians reported")
    bench_cosine_sweep(args.repeats, args.subset)
    bench_sampler(args.sampler_repeats, args.images, args.steps, cfg=4.0)


if __name__ == "__main__":
    main()

"""The regime ladder: organisms that differ from one base recipe along one training factor each.

The base is a DiT on composite digits (:mod:`bottleneck_utils.organisms.composite`: 2×2 canvases of 12×12 MNIST digits,
24×24, patch 3 → 64 tokens, 4×4 tokens per digit), width 64, 2 blocks, AdamW at 1e-3, batch 128, DDPM over 1000 timesteps, 10 classes.
Each rung changes one factor:

    classes      ladder/c10 (the base), ladder/c100, ladder/c1000
    width        ladder/d128, ladder/d256                      (heads of 32 dims, as the base)
    lr           ladder/lr1e-4
    timesteps    ladder/T50, ladder/T100, ladder/T200           (DiT's β scaled by 1000/T)
    objective    ladder/flow-c10, ladder/flow-c1000             (SiT's flow convention)
    length       ladder/c10-long                                (the base, run 10× mnist-dit's 4,000 steps)

Beyond the issue's axes, rungs sized for a GPU (each about 10 CPU hours): ``ladder/d512`` extends the width axis
toward the paper's 1152, and ``ladder/d128-long``, ``ladder/d256-long`` and ``ladder/c1000-long`` run the width and
class rungs longer (each changes one factor from its own rung): 40,000 steps, except d256-long's 34,000 (see its entry).

A rung's log is :func:`stats.summary` of c at t₀ every 100 steps, so the length axis is also read off every log.

    python -m bottleneck_utils.organisms.ladder train [RUNG ...]    # train, measure and ship rungs one after another
                                                          # (default: every rung not shipped yet; --device cuda)
    python -m bottleneck_utils.organisms.ladder finish [RUNG ...]   # measure and ship rungs whose training has ended
                                                          # (--device cuda measures on the GPU)
    python -m bottleneck_utils.organisms.ladder status [RUNG ...]   # shipped, training (last logged step) or pending
    python -m bottleneck_utils.organisms.train ladder/c1000         # one rung's training alone, resumable (runs/ladder/c1000)

Quality: composite-digit agreement of CFG samples at several scales (:func:`quality.composite_quality`), written
to ``quality.json``; a rung below the bar is shipped and reported as below it. Every rung ships its log and embedder; the rungs in ``WEIGHTS_SHIPPED`` (the ends of
the class axis, DDPM and flow, the long run, width 128 and the closest, d256-long) ship full weights for the pruning runs.
"""

from __future__ import annotations

import torch

from bottleneck_utils.organisms import composite, data
from bottleneck_utils.organisms.quality import composite_quality

BASE = {
    "transformer": {
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "in_channels": 1,
        "num_layers": 2,
        "sample_size": 24,
        "patch_size": 3,
        "num_embeds_ada_norm": 10,
        "norm_eps": 1e-6,
    },
    "classes": 10,
    "cell": 12,  # digits at 12×12 on a 24×24 canvas; patch 3 → 4×4 tokens per digit, 64 tokens
    "steps": 16000,  # 4000 steps gave 14% per-digit agreement on c10, 16000 steps 84% (at CFG 4)
    "batch_size": 128,
    "lr": 1e-3,
    "ema_decay": 0.999,
    "label_dropout": 0.1,
    "log_every": 100,
    "objective": "ddpm",
    "train_timesteps": 1000,
}


def rung(classes: int = 10, width: int = 64, **changes) -> dict:
    """The base recipe with ``classes`` classes, hidden size ``width`` (32-dim heads) and other changes."""
    transformer = BASE["transformer"] | {"num_embeds_ada_norm": classes, "num_attention_heads": width // 32}
    names = [f"{n:0{composite.label_digits(classes)}d}" for n in range(classes)]
    return BASE | {"transformer": transformer, "classes": classes, "class_names": names} | changes


RUNGS = {
    "ladder/c10": rung(10),
    "ladder/c100": rung(100),
    "ladder/c1000": rung(1000),
    "ladder/flow-c10": rung(10, objective="flow-sit"),
    "ladder/flow-c1000": rung(1000, objective="flow-sit"),
    "ladder/lr1e-4": rung(10, lr=1e-4),
    "ladder/T50": rung(10, train_timesteps=50),
    "ladder/T100": rung(10, train_timesteps=100),
    "ladder/T200": rung(10, train_timesteps=200),
    "ladder/d128": rung(10, width=128),
    "ladder/d256": rung(10, width=256),
    "ladder/c10-long": rung(10, steps=40000),
    # beyond the axes, for a GPU (about 10 CPU hours each): width toward the paper's 1152, and the long run
    # on the wider and the 1000-class rungs
    "ladder/d512": rung(10, width=512),
    "ladder/d128-long": rung(10, width=128, steps=40000),
    # 34,000 steps: the GPU run's log at 30,000 had nPR(c) inside the paper's band and cos(y) rising 0.014 per
    # 1,000 steps toward it (0.483; the band starts at 0.519), so the run was extended to where it extrapolates in
    "ladder/d256-long": rung(10, width=256, steps=34000),
    "ladder/c1000-long": rung(1000, steps=40000),
}


WEIGHTS_SHIPPED = {"ladder/c10", "ladder/c1000", "ladder/flow-c10", "ladder/flow-c1000",
                   "ladder/c10-long",  # the closest rung to the regime at 40k steps (cos(y) in the band)
                   "ladder/d128",  # the closest of the axes (nPR(c) and cos(c) nearest the bands)
                   "ladder/d256-long"}  # the closest of all: nPR(c) inside the paper's band
QUALITY_SAMPLES = {10: 500, 100: 1000, 1000: 2000}  # 50, 10 and 2 per class
QUALITY_STEPS = 25


def source(recipe: dict) -> composite.CompositeDigits:
    """The composite-digit stream of a rung, drawn from the 60,000 MNIST training digits at the rung's cell size."""
    images, labels = data.load_mnist("train")
    return composite.CompositeDigits(composite.digits_at(images, recipe["cell"]), torch.as_tensor(labels),
                                     recipe["classes"])


def finish(name: str, device: str = "cpu") -> dict:
    """Measures a finished rung's quality on ``device`` into ``quality.json`` and installs it into the package data."""
    from bottleneck_utils.organisms import train

    classes = RUNGS[name]["classes"]
    return train.finish_run(name, lambda bundle: composite_quality(bundle, classes, QUALITY_SAMPLES[classes],
                                                                   QUALITY_STEPS),
                            name in WEIGHTS_SHIPPED, "python -m bottleneck_utils.organisms.ladder", device)


def main(argv: list[str] | None = None) -> None:
    from bottleneck_utils.organisms import train

    train.registry_main(argv, __doc__, RUNGS, source, finish, lambda name, quality: (
        f"{name}: per-digit {quality['per_digit']:.1%}, all digits {quality['all_digits']:.1%} "
        f"at CFG {quality['best_cfg']:g}"))


if __name__ == "__main__":
    main()

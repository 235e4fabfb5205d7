"""Beyond the paper: organisms with a bottleneck built in at training time (:mod:`bottleneck_utils.adaln_code`).

Every variant starts from the shipped ``mnist-dit`` and trains on for the same number of steps under one
constraint; ``beyond/full`` trains on unconstrained, so it is the control that separates the constraint from the
extra training:

    beyond/k2 ... beyond/k32   the adaLN reads a k-dimensional code z = P silu(c) (P trained, started at the
                               top-k principal directions of silu(c))
    beyond/l1-1e-2, l1-1e-1    the loss gains λ·mean|c| (the logged loss includes it)
    beyond/full                no constraint

Warm-starting is this CPU's compromise: a from-scratch mnist-dit costs ~20 CPU minutes, a variant here ~5.

    python -m bottleneck_utils.organisms.beyond train [VARIANT ...]    # train, measure and ship, one after another
    python -m bottleneck_utils.organisms.beyond finish [VARIANT ...]   # measure and ship variants whose training has ended

Quality (``quality.json``): :func:`quality.mnist_quality` at :data:`QUALITY_STEPS` DDIM steps. Every variant ships
its weights (the chapter samples from each).
"""

from __future__ import annotations

from bottleneck_utils.organisms import train
from bottleneck_utils.organisms.quality import mnist_quality

CODE_WIDTHS = (2, 4, 8, 16, 32)
L1_STRENGTHS = (1e-2, 1e-1)
# ema_decay 0.99: a 0.999 EMA would still hold 0.999^500 ≈ 61% of the warm start after the run
BASE = train.MNIST_DIT | {"init_from": "mnist-dit", "steps": 500, "ema_decay": 0.99}
VARIANTS = {
    **{f"beyond/k{k}": BASE | {"code_width": k} for k in CODE_WIDTHS},
    **{f"beyond/l1-{strength:.0e}".replace("e-0", "e-"): BASE | {"l1_c": strength} for strength in L1_STRENGTHS},
    "beyond/full": BASE,
}
QUALITY_STEPS = 25
QUALITY_PER_CLASS = 30


def finish(name: str, device: str = "cpu") -> dict:
    """Measures a finished variant's quality on ``device`` into ``quality.json`` and installs it (weights included)."""
    return train.finish_run(name, lambda bundle: mnist_quality(bundle, QUALITY_PER_CLASS, QUALITY_STEPS), True,
                            "python -m bottleneck_utils.organisms.beyond", device)


def main(argv: list[str] | None = None) -> None:
    _, mnist = train.organism("mnist-dit")
    train.registry_main(argv, __doc__, VARIANTS, lambda recipe: mnist, finish, lambda name, quality: (
        f"{name}: {quality['per_digit']:.1%} read as requested at CFG {quality['best_cfg']:g}"))


if __name__ == "__main__":
    main()

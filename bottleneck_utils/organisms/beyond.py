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

from bottleneck_utils.organisms import recipes

# Transitional: the chapters read these dict views until they move to organisms.recipes (this module then goes).
BASE = recipes.VARIANT_BASE.as_dict()
VARIANTS = {name: recipe.as_dict() for name, recipe in recipes.VARIANTS.items()}

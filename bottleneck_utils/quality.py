"""Quality bars of the organisms: how often the shipped MNIST classifier reads the requested digits in CFG samples.

Each bar is measured at several CFG scales and reported at the best one, with every scale kept in the record
(``quality.json`` beside a trained organism).
"""

from __future__ import annotations

import torch

from bottleneck_utils import classifier, composite, sampling
from bottleneck_utils.models import Bundle

CFG_SCALES = (1.0, 2.0, 4.0)
BAR = 0.9  # share of requested digits read as requested, at the best CFG scale


def by_cfg(bundle: Bundle, labels: torch.Tensor, score, num_steps: int, cfg_scales=None, seed: int = 0) -> dict:
    """Samples ``labels`` at each CFG scale and scores them; ``score(images, labels)`` returns a dict whose
    ``"per_digit"`` entry (share of requested digits read as requested) picks the best scale. ``cfg_scales``
    defaults to :data:`CFG_SCALES`."""
    scores = {}
    for scale in cfg_scales or CFG_SCALES:
        images = sampling.sample(bundle, labels, num_steps=num_steps, cfg_scale=scale, seed=seed, progress=False)
        scores[str(float(scale))] = score(images, labels)
    best = max(scores, key=lambda scale: scores[scale]["per_digit"])
    return {"samples": len(labels), "steps": num_steps, "by_cfg": scores, "best_cfg": float(best), **scores[best],
            "bar_per_digit": BAR, "meets_bar": scores[best]["per_digit"] >= BAR}


def mnist_quality(bundle: Bundle, per_class: int = 50, num_steps: int = 50, cfg_scales=None) -> dict:
    """Share of 14×14 samples (``per_class`` per digit) that the classifier reads as the requested digit."""
    reader = classifier.load_classifier()

    def score(images, labels):
        return {"per_digit": (classifier.predict(reader, images).argmax(-1) == labels).double().mean().item()}

    return by_cfg(bundle, sampling.balanced_labels(10, 10 * per_class), score, num_steps, cfg_scales)


def composite_quality(bundle: Bundle, num_classes: int, num_samples: int, num_steps: int = 25,
                      cfg_scales=None) -> dict:
    """Composite-digit agreement (:func:`composite.agreement`) of class-balanced samples; chance is 1/num_classes."""
    reader = classifier.load_classifier()
    labels = sampling.balanced_labels(num_classes, num_samples)
    quality = by_cfg(bundle, labels, lambda images, y: composite.agreement(reader, images, y, num_classes),
                     num_steps, cfg_scales)
    return quality | {"chance_all_digits": 1 / num_classes}

"""Quality bars of the organisms: how often the shipped MNIST classifier reads the requested digits in CFG samples.

Each bar is measured at several CFG scales and reported at the best one, with every scale kept in the record
(``quality.json`` beside a trained organism).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bottleneck_utils import integrity, sampling
from bottleneck_utils.metrics import INCEPTION_FEATURE_NETWORK, Evaluator, Reference, inception_evaluator
from bottleneck_utils.models import Bundle
from bottleneck_utils.organisms import classifier, composite, data, recipes

CFG_SCALES = (1.0, 2.0, 4.0)
BAR = 0.9  # share of requested digits read as requested, at the best CFG scale


def read_record(path: Path, name: str) -> dict:
    """The quality record ``path`` (a ``quality.json``) of the organism, rung or variant ``name``, or one line
    naming the file and how to restore or measure it again (:func:`integrity.read_json`).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is truncated or damaged.
    """
    return integrity.read_json(path, "the quality record", _record_fix(name))


def _record_fix(name: str) -> str:
    """Restore the record, or measure it again: a rung or variant by its registry, an organism by its training."""
    registry = "ladder" if name in recipes.RUNGS else "beyond" if name in recipes.VARIANTS else None
    if registry is None:
        return integrity.shipped_fix(name)
    return ("restore it with git checkout (or re-clone the repository), or measure it again with: python -m "
            f"bottleneck_utils.organisms.cli {registry} train {name}")


READOUT = "the MNIST classifier (digit readout)"  # what scores a quality record's samples


def by_cfg(bundle: Bundle, labels: torch.Tensor, score, num_steps: int, cfg_scales=None, seed: int = 0) -> dict:
    """Samples ``labels`` at each CFG scale and scores them; ``score(images, labels)`` returns a dict whose
    ``"per_digit"`` entry (share of requested digits read as requested) picks the best scale. ``cfg_scales``
    defaults to :data:`CFG_SCALES`. The record carries the best scale's ``sampler_card``
    (:func:`sampling.sampler_card`; the other scales differ from it only in ``cfg_scale``, ``guided`` and ``nfe``)."""
    scores = {}
    for scale in cfg_scales or CFG_SCALES:
        images = sampling.sample(bundle, labels, num_steps=num_steps, cfg_scale=scale, seed=seed, progress=False)
        scores[str(float(scale))] = score(images, labels)
    best = max(scores, key=lambda scale: scores[scale]["per_digit"])
    card = sampling.sampler_card(bundle, num_samples=len(labels), num_steps=num_steps, cfg_scale=float(best),
                                 feature_network=READOUT)  # the best scale's: the record's headline numbers
    return {"samples": len(labels), "steps": num_steps, "by_cfg": scores, "best_cfg": float(best), **scores[best],
            "bar_per_digit": BAR, "meets_bar": scores[best]["per_digit"] >= BAR, "sampler_card": card}


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


def mnist_evaluator(n_kid: int, seed: int = 0, device="cpu", k: int = 3) -> Evaluator:
    """MNIST-FID against the 10,000 MNIST test digits (14×14), KID and P/R against ``n_kid`` of them."""
    if isinstance(n_kid, bool) or not isinstance(n_kid, int) or not 2 <= n_kid <= data.MNIST_TEST_SIZE:
        raise ValueError(f"n_kid must be an int in 2..{data.MNIST_TEST_SIZE}, got {n_kid!r}")
    model = classifier.load_classifier(device)
    images, _ = data.load_mnist("test")
    features, _ = classifier.classifier_outputs(model, classifier.downsample(images))  # (10000, 128)
    subset = np.random.default_rng(seed).choice(len(features), n_kid, replace=False)
    reference = Reference.from_features(features, "MNIST test set (10,000 digits, 14×14)", features[subset])
    return Evaluator("MNIST-FID", reference, lambda images: classifier.classifier_outputs(model, images), k,
                     MNIST_FEATURE_NETWORK)


MNIST_FEATURE_NETWORK = "the MNIST classifier (128-d features)"


def _is_mnist(bundle) -> bool:
    return bundle.image_shape == classifier.IMAGE_SHAPE and bundle.num_classes == classifier.NUM_CLASSES


def scoring(bundle) -> tuple[str, str | None]:
    """What :func:`evaluator_for` scores this bundle's samples with, without loading it: (its ``feature_network``,
    its ``fid_mode``), for :func:`sampling.sampler_card`.

    Raises:
        ValueError: no evaluator fits the bundle's images (as :func:`evaluator_for`).
    """
    if _is_mnist(bundle):
        return MNIST_FEATURE_NETWORK, None
    if bundle.image_shape is not None and bundle.image_shape[0] == 3:
        return INCEPTION_FEATURE_NETWORK, "clean"
    return evaluator_for(bundle).feature_network, None  # raises, naming what fits


def evaluator_for(bundle, reference_stats: str | Path = "", n_kid: int = 1000, seed: int = 0, device="cpu",
                  k: int = 3) -> Evaluator:
    """The evaluator that fits the images a model generates (``bundle.image_shape``, ``bundle.num_classes``).

    (1, 14, 14) images of 10 classes, the MNIST organisms', get MNIST-FID (:func:`mnist_evaluator`); RGB images get
    Inception FID against ``reference_stats`` (:func:`inception_evaluator`); anything else raises.

    Args:
        bundle: the model whose samples will be evaluated.
        reference_stats: for Inception FID, see :func:`load_reference`; not used by MNIST-FID.
        n_kid: MNIST test digits kept for KID and precision/recall (use the generated sample count).
        seed: draws those digits.
        device: where the feature network runs.
        k: neighbours of the precision/recall manifolds.
    """
    shape = bundle.image_shape
    if _is_mnist(bundle):
        return mnist_evaluator(n_kid, seed, device, k)
    if shape is not None and shape[0] == 3:
        return inception_evaluator(reference_stats, device, k=k)
    raise ValueError(f"no evaluator fits {bundle.name}'s images {shape} with {bundle.num_classes} classes: Inception "
                     f"FID needs RGB (3, H, W) images, MNIST-FID (1, 14, 14) digits of 10 classes")

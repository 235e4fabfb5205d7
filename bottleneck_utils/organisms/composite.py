"""Composite digits: the class-count axis of the regime ladder on real MNIST digits.

Every image is a 2×2 canvas of four real MNIST digits, resized to the cell size s (a 2s×2s canvas). The label names the first 1, 2 or 3 cells in reading order (top-left, top-right, bottom-left),
read as a base-10 number, so 10, 100 or 1000 classes (the ImageNet count); the other cells hold random digits.
The data and the token count are the same on every rung: only the class granularity changes.

The quality metric reads each labelled cell with the shipped 14×14 MNIST classifier (cells resized to 14×14): a
sample agrees when every labelled digit is read as requested (chance: 1/10, 1/100, 1/1000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bottleneck_utils.organisms.classifier import classifier_outputs, predict
from bottleneck_utils.organisms.data import load_mnist

READER_SIZE = 14  # the shipped classifier's resolution; cells of another size are resized to it to be read
GRID = 2  # a 2×2 canvas
CELLS = GRID * GRID
LABEL_DIGITS = {10: 1, 100: 2, 1000: 3}  # classes → labelled cells


def label_digits(num_classes: int) -> int:
    """How many cells a label names: 10 → 1, 100 → 2, 1000 → 3."""
    if num_classes not in LABEL_DIGITS:
        raise ValueError(f"composite digits have 10, 100 or 1000 classes, got {num_classes!r}")
    return LABEL_DIGITS[num_classes]


def class_of_digits(digits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class id of each row of cell digits (n, 4): the first ``label_digits`` read as a base-10 number."""
    k = label_digits(num_classes)
    digits = torch.as_tensor(digits)
    if digits.ndim != 2 or digits.shape[1] != CELLS or digits.is_floating_point() or ((digits < 0) | (digits > 9)).any():
        raise ValueError(f"digits must be an integer (n, {CELLS}) tensor of 0..9, one row per canvas")
    powers = 10 ** torch.arange(k - 1, -1, -1)  # (k,): most significant first
    return (digits[:, :k] * powers).sum(-1)  # (n,)


def digits_of_class(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The labelled digits (n, k) of each class id (n,), most significant first."""
    k = label_digits(num_classes)
    raw = torch.as_tensor(classes)
    if raw.is_floating_point() and not torch.equal(raw, raw.round()):
        raise ValueError(f"class ids must be whole numbers in 0..{num_classes - 1}, got fractions")
    classes = raw.long().flatten()
    if ((classes < 0) | (classes >= num_classes)).any():
        raise ValueError(f"class ids must be in 0..{num_classes - 1}")
    powers = 10 ** torch.arange(k - 1, -1, -1)
    return classes[:, None] // powers % 10  # (n, k)


def tile(cells: torch.Tensor) -> torch.Tensor:
    """(n, 4, 1, s, s) cells in reading order → (n, 1, 2s, 2s) canvases."""
    if cells.ndim != 5 or cells.shape[1:3] != (CELLS, 1) or cells.shape[3] != cells.shape[4]:
        raise ValueError(f"cells must be (n, {CELLS}, 1, s, s), got {tuple(cells.shape)}")
    n, size = cells.shape[0], cells.shape[-1]
    rows = cells.reshape(n, GRID, GRID, 1, size, size)  # (n, row, col, 1, s, s)
    return rows.permute(0, 3, 1, 4, 2, 5).reshape(n, 1, GRID * size, GRID * size)


def cells_of(canvases: torch.Tensor) -> torch.Tensor:
    """(n, 1, 2s, 2s) canvases → (n, 4, 1, s, s) cells in reading order (the inverse of :func:`tile`)."""
    if canvases.ndim != 4 or canvases.shape[1] != 1 or canvases.shape[2] != canvases.shape[3] or canvases.shape[2] % 2:
        raise ValueError(f"composite canvases are (n, 1, 2s, 2s), got {tuple(canvases.shape)}")
    n, size = canvases.shape[0], canvases.shape[-1] // GRID
    grid = canvases.reshape(n, 1, GRID, size, GRID, size).permute(0, 2, 4, 1, 3, 5)  # (n, row, col, 1, s, s)
    return grid.reshape(n, CELLS, 1, size, size)


def digits_at(digits_28: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 28, 28) uint8 MNIST → (N, 1, size, size) floats in [0, 1], by area averaging."""
    x = torch.as_tensor(digits_28).float().div(255)[:, None]  # (N, 1, 28, 28)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


def readable(cells: torch.Tensor) -> torch.Tensor:
    """(m, 1, s, s) cells → (m, 1, 14, 14) for the classifier (bilinear when s ≠ 14)."""
    if cells.shape[-1] == READER_SIZE:
        return cells
    return torch.nn.functional.interpolate(cells, size=(READER_SIZE, READER_SIZE), mode="bilinear",
                                           align_corners=False)


@dataclass
class CompositeDigits:
    """Draws composite canvases from a pool of 14×14 digits, so every batch is fresh (the pool is real MNIST).

    Attributes:
        digits: (N, 1, s, s) float images in [0, 1] (s = the cell size).
        labels: (N,) digit labels 0..9.
        num_classes: 10, 100 or 1000.
    """

    digits: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self):
        label_digits(self.num_classes)
        if self.digits.ndim != 4 or self.digits.shape[1] != 1 or len(self.digits) != len(self.labels):
            raise ValueError(f"digits must be (N, 1, s, s) with N labels, got {tuple(self.digits.shape)}")

    def draw(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n canvases in [-1, 1] (n, 1, 2s, 2s) and their class ids (n,)."""
        picks = torch.randint(len(self.digits), (n, CELLS), generator=generator)  # (n, 4)
        canvases = tile(self.digits[picks]) * 2 - 1
        return canvases, class_of_digits(self.labels[picks], self.num_classes)


@torch.no_grad()
def agreement(classifier, canvases: torch.Tensor, classes: torch.Tensor, num_classes: int) -> dict[str, float]:
    """How often the classifier reads the requested digits in generated canvases (in [0, 1]).

    Returns:
        ``all_digits``: share of samples whose every labelled digit is read as requested (chance 1/num_classes);
        ``per_digit``: share of labelled cells read as requested (chance 1/10).
    """
    if canvases.min() < 0 or canvases.max() > 1:
        raise ValueError("agreement takes canvases in [0, 1]; map [-1, 1] samples with x / 2 + 0.5")
    k = label_digits(num_classes)
    cells = cells_of(canvases)[:, :k]  # (n, k, 1, s, s)
    size = cells.shape[-1]
    read = classifier(readable(cells.reshape(-1, 1, size, size))).argmax(-1).reshape(len(canvases), k)  # (n, k)
    hits = read == digits_of_class(classes, num_classes)  # (n, k)
    return {"all_digits": hits.all(-1).double().mean().item(), "per_digit": hits.double().mean().item()}


# ---------------------------------------------------------------------------------------------------
#                  A quality measure with headroom: Fréchet distance of every cell's features
# ---------------------------------------------------------------------------------------------------


def read_cells(reader, canvases: torch.Tensor) -> torch.Tensor:
    """The digit ``reader`` reads in every cell of (n, 1, 2s, 2s) canvases in [0, 1]: (n, 4), in reading order."""
    cells = cells_of(canvases)  # (n, 4, 1, s, s)
    size = cells.shape[-1]
    return predict(reader, readable(cells.reshape(-1, 1, size, size))).argmax(-1).reshape(len(canvases), CELLS)


def canvas_features(reader, canvases: torch.Tensor) -> np.ndarray:
    """(n, 1, 2s, 2s) canvases in [0, 1] → (n, 4·128) features: the classifier's penultimate layer of every cell,
    labelled or not, concatenated in reading order (quantized to 8 bits first, as every metric's images are).

    Agreement reads the labelled cells only; a distance on these features also sees a faded or garbled
    unlabelled cell, which is the harm a mask of c can do while the labelled digit survives.
    """
    cells = cells_of(canvases)  # (n, 4, 1, s, s)
    size = cells.shape[-1]
    features, _ = classifier_outputs(reader, readable(cells.reshape(-1, 1, size, size)))  # (n·4, 128)
    return features.reshape(len(canvases), -1)


def real_canvases(classes: torch.Tensor, num_classes: int, cell: int, seed: int = 0) -> torch.Tensor:
    """Real canvases (n, 1, 2·cell, 2·cell) in [0, 1] of the requested classes: each labelled cell a random MNIST
    *test* digit of the requested value, the other cells random test digits (the reference of
    :func:`canvas_features`; the organisms trained on the train split)."""
    images, labels = load_mnist("test")
    digits, labels = digits_at(images, cell), torch.as_tensor(labels).long()
    generator = torch.Generator().manual_seed(seed)
    wanted = digits_of_class(classes, num_classes)  # (n, k)
    picks = torch.randint(len(digits), (len(wanted), CELLS), generator=generator)  # (n, 4) any digit
    for value in range(10):  # the labelled cells: a random test digit of the requested value
        pool = (labels == value).nonzero().flatten()
        where = wanted == value  # (n, k)
        picks[:, : wanted.shape[1]][where] = pool[torch.randint(len(pool), (int(where.sum()),), generator=generator)]
    return tile(digits[picks])

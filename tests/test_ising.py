"""Ising observables, the binned comparison with real data, and the shipped ising-dit's quality bar."""

import numpy as np
import pytest
import torch

from bottleneck_utils.organisms import data, ising

# ---------------------------------------------------------------------------------------------------
#                                        Observables of a lattice
# ---------------------------------------------------------------------------------------------------


def test_energy_of_known_lattices_with_periodic_boundaries():
    up = torch.ones(1, 6, 6, dtype=torch.int8)
    checkerboard = (torch.arange(6)[:, None] + torch.arange(6)[None]) % 2 * 2 - 1  # (6, 6)
    corner = up.clone()
    corner[0, 0, 0] = -1  # periodic: 4 broken bonds (open boundaries would give 2)
    energies = ising.energy_per_spin(torch.cat([up, checkerboard[None].to(torch.int8), corner]))
    assert energies.tolist() == pytest.approx([-2.0, 2.0, -2.0 + 8 / 36])  # 8 / 36 is not exact in binary


def test_magnetization_and_binarize():
    corner = torch.ones(1, 4, 4, dtype=torch.int8)
    corner[0, 0, 0] = -1
    stripes = torch.tensor([[1, -1], [1, -1]], dtype=torch.int8)[None]
    assert ising.abs_magnetization(torch.cat([-torch.ones(1, 4, 4, dtype=torch.int8), corner])).tolist() == \
        pytest.approx([1.0, 1 - 2 / 16])  # a mean of ±1 over 16 spins, possibly summed in float32
    assert ising.abs_magnetization(stripes).tolist() == [0.0]
    images = torch.tensor([[[[0.0, 0.49], [0.5, 1.0]]]])  # (1, 1, 2, 2) sampler output in [0, 1]
    assert ising.binarize(images).tolist() == [[[-1, -1], [1, 1]]]


def test_observables_reject_non_spins():
    with pytest.raises(ValueError, match="-1 or \\+1"):
        ising.energy_per_spin(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        ising.abs_magnetization(torch.ones(4, 4))
    with pytest.raises(ValueError, match="single-channel"):
        ising.binarize(torch.ones(1, 3, 4, 4))


# ---------------------------------------------------------------------------------------------------
#                                    Samples against the real data
# ---------------------------------------------------------------------------------------------------

EDGES = np.array([0.0, 1.0, 2.0, 3.0])


def synthetic(shift=0.0, n=300, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 3, n)
    return t, -2 + 0.5 * t + shift + rng.normal(0, 0.05, n)


def test_binned_comparison_measures_a_known_offset():
    real_t, real_e = synthetic(seed=1)
    sample_t, sample_e = synthetic(shift=0.1, seed=2)
    comparison = ising.binned_comparison(sample_t, sample_e, real_t, real_e, EDGES)
    assert comparison.centers.tolist() == [0.5, 1.5, 2.5]
    assert comparison.sample_count.sum() == 300 and comparison.real_count.sum() == 300
    # a planted offset of 0.1 plus noise: σ 0.05 over ~100 points per bin is ±0.005 per bin mean; 0.03 is 6σ
    assert comparison.mean_abs_error == pytest.approx(0.1, abs=0.03)
    same = ising.binned_comparison(real_t, real_e, real_t, real_e, EDGES)
    assert same.mean_abs_error == 0.0
    low, high = ising.bootstrap_mean_abs_error(sample_t, sample_e, real_t, real_e, EDGES, num_resamples=200)
    assert low < comparison.mean_abs_error < high and high - low < 0.05
    assert (low, high) == ising.bootstrap_mean_abs_error(sample_t, sample_e, real_t, real_e, EDGES, num_resamples=200)


def test_paired_difference_sees_a_small_shift_that_overlapping_intervals_hide():
    real_t, real_e = synthetic(seed=1)
    sample_t, sample_e = synthetic(shift=0.1, seed=2)
    shifted = sample_e + 0.01  # the same samples, every energy 0.01 further from the real data
    low, high = ising.bootstrap_paired_difference(sample_t, sample_e, shifted, real_t, real_e, EDGES,
                                                  num_resamples=200)
    # pairing cancels the sampling noise: the difference is 0.01 in every resample (bins keep their sign), up to
    # float rounding of means of ~100 values
    assert low == pytest.approx(0.01, abs=1e-9) and high == pytest.approx(0.01, abs=1e-9)
    unpaired = [ising.bootstrap_mean_abs_error(sample_t, e, real_t, real_e, EDGES, num_resamples=200)
                for e in (sample_e, shifted)]
    assert unpaired[1][0] < unpaired[0][1]  # the unpaired intervals overlap: they cannot see the shift
    with pytest.raises(ValueError, match="one shape"):
        ising.bootstrap_paired_difference(sample_t, sample_e, shifted[:-1], real_t, real_e, EDGES)


def test_binned_comparison_refuses_empty_bins_and_stray_temperatures():
    real_t, real_e = synthetic()
    with pytest.raises(ValueError, match="empty bins"):
        ising.binned_comparison([0.5, 0.6], [1.0, 1.0], real_t, real_e, EDGES)
    with pytest.raises(ValueError, match="outside the edges"):
        ising.binned_comparison([3.5], [1.0], real_t, real_e, EDGES)
    with pytest.raises(ValueError, match="length mismatch"):
        ising.binned_comparison([0.5], [1.0, 2.0], real_t, real_e, EDGES)


def test_spearman_follows_rank_order():
    t = np.linspace(0, 4, 50)
    assert ising.temperature_spearman(t, np.exp(t)) == pytest.approx(1.0)  # identical ranks; float64 rounding
    assert ising.temperature_spearman(t, -t) == pytest.approx(-1.0)  # as above


def test_real_data_energy_rises_with_temperature():
    """The data the quality bar is measured against: ordered (E ≈ -1.8) when cold, disordered (E ≈ -0.5) when hot."""
    real = data.load_ising(16)
    energy = ising.energy_per_spin(real.spins)
    edges = np.linspace(0.0, 4.54, 10)
    means = ising.binned_comparison(real.temperature, energy, real.temperature, energy, edges).real_mean
    assert np.all(np.diff(means) > 0) and means[0] < -1.6 and means[-1] > -0.7


def test_training_symmetries_preserve_energy_and_magnetization():
    from bottleneck_utils.organisms.train import ising_symmetries

    spins = torch.as_tensor(data.load_ising(16).spins[:200], dtype=torch.float32)[:, None]  # (200, 1, 16, 16)
    moved = ising_symmetries(spins, torch.Generator().manual_seed(0))
    before, after = spins[:, 0].to(torch.int8), moved[:, 0].to(torch.int8)
    assert np.array_equal(ising.energy_per_spin(before), ising.energy_per_spin(after))
    assert np.array_equal(ising.abs_magnetization(before), ising.abs_magnetization(after))
    assert (moved != spins).any(dim=(1, 2, 3)).float().mean() > 0.9  # almost every image was transformed


def test_sample_quality_of_real_configurations_against_themselves():
    real = data.load_ising(16)
    images = torch.as_tensor((real.spins[:, None] + 1) / 2, dtype=torch.float32)  # spins as sampler output in [0, 1]
    edges = np.linspace(0.0, 4.54, 10)
    quality = ising.sample_quality(images, real.temperature, real.spins, real.temperature, edges)
    assert quality.energy.mean_abs_error == 0.0 and quality.magnetization.mean_abs_error == 0.0
    assert 0.9 < quality.spearman < 0.97  # the data's own rank correlation between T and energy


# ---------------------------------------------------------------------------------------------------
#                                     The shipped ising-dit organism
# ---------------------------------------------------------------------------------------------------


def test_ising_dit_loads_by_name_with_its_range_and_log():
    import csv
    import json

    from bottleneck_utils.integrity import manifest
    from bottleneck_utils.models import embedded_dir, load

    bundle = load("ising-dit")
    assert bundle.sha256 == manifest()["ising-dit"]["sha256"]
    assert bundle.condition.name == "temperature" and bundle.condition.low <= 0.0004 and bundle.condition.high >= 4.53
    assert np.isnan(bundle.null_label) and bundle.num_classes == 0
    steps = json.loads((embedded_dir("ising-dit") / "meta.json").read_text())["steps"]
    logged = [int(row["step"]) for row in csv.DictReader((embedded_dir("ising-dit") / "train_log.csv").open())]
    assert logged[0] == 0 and logged[-1] == steps


@pytest.mark.slow
def test_ising_dit_samples_follow_the_requested_temperature():
    """The quality bar of the issue: Spearman(T, E) >= 0.9 and binned mean |ΔE| <= 0.15 against real data."""
    from bottleneck_utils.models import load
    from bottleneck_utils.sampling import sample

    bundle = load("ising-dit")
    real = data.load_ising(16)
    temperatures = torch.linspace(bundle.condition.low, bundle.condition.high, 162, dtype=torch.float64)
    images = sample(bundle, temperatures, num_steps=25, cfg_scale=1.0, seed=0, progress=False)
    edges = np.linspace(bundle.condition.low, bundle.condition.high, 10)
    quality = ising.sample_quality(images, temperatures, real.spins, real.temperature, edges)
    assert quality.spearman >= 0.9, f"Spearman(T, E) = {quality.spearman:.3f}"
    assert quality.energy.mean_abs_error <= 0.15, f"binned mean |ΔE| = {quality.energy.mean_abs_error:.3f}"

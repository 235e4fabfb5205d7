"""Physical checks of Ising samples: energy per spin, |magnetisation|, and their agreement with the real data.

A temperature-conditional generator is good when its samples have the energy and magnetisation of real
configurations at the requested temperature. Samples are binarised to spins in {-1, +1}; the energy is the
nearest-neighbour energy per spin with periodic boundaries (J = k_B = 1),

    E / N = −(1/N) Σ_⟨ij⟩ s_i s_j ∈ [−2, 2],

and both are compared with the real images binned by temperature (the data's own values, not textbook curves:
a 16×16 lattice simulated for finite time keeps domains at low T, so its |m| is far from 1 there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from bottleneck_utils import metrics

# ---------------------------------------------------------------------------------------------------
#                                        Observables of a lattice
# ---------------------------------------------------------------------------------------------------


SPIN_UP = 0.5  # the binarisation threshold: a pixel at or above it is spin up (the midpoint of [0, 1])


def binarize(images: torch.Tensor) -> torch.Tensor:
    """Sampler output (N, 1, H, W) in [0, 1] → spins (N, H, W) in {-1, +1}; a pixel ≥ ``SPIN_UP`` is spin up."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected single-channel images (N, 1, H, W), got shape {tuple(images.shape)}")
    return torch.where(images[:, 0] >= SPIN_UP, 1, -1).to(torch.int8)  # (N, H, W)


def _as_spins(spins) -> torch.Tensor:
    spins = torch.as_tensor(spins)
    if spins.ndim != 3:
        raise ValueError(f"expected spins of shape (N, H, W), got {tuple(spins.shape)}")
    if not torch.isin(spins, torch.tensor([-1, 1], dtype=spins.dtype)).all():
        raise ValueError("spins must be -1 or +1 (binarise sampler output with ising.binarize first)")
    return spins.double()


def energy_per_spin(spins) -> np.ndarray:
    """Nearest-neighbour energy per spin with periodic boundaries, −(1/N) Σ_⟨ij⟩ s_i s_j, of (N, H, W) spins → (N,)."""
    s = _as_spins(spins)  # (N, H, W)
    bonds = s * s.roll(1, dims=1) + s * s.roll(1, dims=2)  # (N, H, W): the bond below and the bond right
    return (-bonds.mean(dim=(1, 2))).numpy()


def abs_magnetization(spins) -> np.ndarray:
    """|m| = |mean spin| of each (N, H, W) configuration → (N,)."""
    return _as_spins(spins).mean(dim=(1, 2)).abs().numpy()


# ---------------------------------------------------------------------------------------------------
#                                 Samples against the real data, by temperature
# ---------------------------------------------------------------------------------------------------


@dataclass
class BinnedComparison:
    """Per-temperature-bin means of an observable, for samples and for the real data.

    Attributes:
        edges: bin edges (B + 1,).
        centers: bin centres (B,).
        sample_mean: mean of the samples whose requested T falls in each bin (B,).
        real_mean: mean of the real configurations in each bin (B,).
        sample_count: samples per bin (B,).
        real_count: real configurations per bin (B,).
    """

    edges: np.ndarray
    centers: np.ndarray
    sample_mean: np.ndarray
    real_mean: np.ndarray
    sample_count: np.ndarray
    real_count: np.ndarray

    @property
    def abs_error(self) -> np.ndarray:
        """|sample mean − real mean| per bin (B,)."""
        return np.abs(self.sample_mean - self.real_mean)

    @property
    def mean_abs_error(self) -> float:
        """The binned mean |Δ|: the average over bins of |sample mean − real mean|."""
        return float(self.abs_error.mean())


def _bin_index(temperature: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each temperature; bins are [edge_k, edge_k+1), the last one closed."""
    return np.clip(np.digitize(temperature, edges[1:-1]), 0, len(edges) - 2)


def _bin_means(temperature: np.ndarray, values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = _bin_index(temperature, edges)
    counts = np.bincount(index, minlength=len(edges) - 1)
    sums = np.bincount(index, weights=values, minlength=len(edges) - 1)
    return sums / np.maximum(counts, 1), counts


def binned_comparison(sample_t, sample_values, real_t, real_values, edges) -> BinnedComparison:
    """Means of an observable per temperature bin, for samples (at their requested T) and for the real data.

    Args:
        sample_t: requested temperature of each sample (n,).
        sample_values: the observable of each sample (n,), e.g. :func:`energy_per_spin`.
        real_t: temperature of each real configuration (m,).
        real_values: the observable of each real configuration (m,).
        edges: increasing bin edges (B + 1,); every temperature must lie within [edges[0], edges[-1]].

    Raises:
        ValueError: mismatched lengths, a temperature outside the edges, or a bin without samples or real data.
    """
    sample_t, sample_values, real_t, real_values, edges = map(np.asarray, (sample_t, sample_values, real_t,
                                                                           real_values, edges))
    if len(sample_t) != len(sample_values) or len(real_t) != len(real_values):
        raise ValueError("each temperature needs exactly one value (length mismatch)")
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be at least two increasing values")
    for name, t in (("sample", sample_t), ("real", real_t)):
        if t.min() < edges[0] or t.max() > edges[-1]:
            raise ValueError(f"{name} temperatures span [{t.min():g}, {t.max():g}], outside the edges")
    sample_mean, sample_count = _bin_means(sample_t, sample_values, edges)
    real_mean, real_count = _bin_means(real_t, real_values, edges)
    if (sample_count == 0).any() or (real_count == 0).any():
        raise ValueError(f"empty bins (samples per bin {sample_count.tolist()}, real {real_count.tolist()})")
    centers = (edges[1:] + edges[:-1]) / 2
    return BinnedComparison(edges, centers, sample_mean, real_mean, sample_count, real_count)


def temperature_spearman(temperature, values) -> float:
    """Spearman rank correlation between requested temperature and an observable (e.g. the sample energy)."""
    return float(spearmanr(np.asarray(temperature), np.asarray(values)).statistic)


def _stratified_resample(index_by_bin: list[np.ndarray], generator: np.random.Generator) -> np.ndarray:
    """Indices drawn with replacement within each bin, keeping every bin's size."""
    return np.concatenate([generator.choice(members, size=len(members)) for members in index_by_bin])


def _stratified_bootstrap(sample_t, real_t, edges, statistic, num_resamples: int, seed: int,
                          level: float) -> tuple[float, float]:
    """The interval of ``statistic(s, r)`` over resamples of the sample and real indices within each bin (a
    stratified two-sample design: the bins keep their sizes), as the package's one interval, the statistic on all
    indices ± z·SE of the resamples (:func:`metrics.normal_interval`)."""
    sample_bins = [np.flatnonzero(_bin_index(sample_t, edges) == b) for b in range(len(edges) - 1)]
    real_bins = [np.flatnonzero(_bin_index(real_t, edges) == b) for b in range(len(edges) - 1)]
    generator = np.random.default_rng(seed)
    values = np.empty(num_resamples)
    for k in range(num_resamples):
        values[k] = statistic(_stratified_resample(sample_bins, generator), _stratified_resample(real_bins, generator))
    point = statistic(np.concatenate(sample_bins), np.concatenate(real_bins))
    low, high = metrics.normal_interval(point, values, level)
    return float(low), float(high)


def bootstrap_mean_abs_error(sample_t, sample_values, real_t, real_values, edges, num_resamples: int = 1000,
                             seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap CI of the binned mean |Δ|, resampling samples and real data within each bin.

    Returns:
        ``(low, high)``, the ``level`` interval (:func:`_stratified_bootstrap`).
    """
    sample_t, sample_values, real_t, real_values, edges = map(np.asarray, (sample_t, sample_values, real_t,
                                                                           real_values, edges))
    binned_comparison(sample_t, sample_values, real_t, real_values, edges)  # validates the inputs once
    return _stratified_bootstrap(sample_t, real_t, edges, lambda s, r: binned_comparison(
        sample_t[s], sample_values[s], real_t[r], real_values[r], edges).mean_abs_error, num_resamples, seed, level)


def bootstrap_paired_difference(sample_t, baseline_values, other_values, real_t, real_values, edges,
                                num_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap CI of ``mae(other) − mae(baseline)``, the binned mean |Δ| against real data.

    The two sample sets must be paired (sample i of both at the same requested temperature, from the same noise):
    each resample draws one set of sample indices for both, and one set of real indices, so the noise they share
    cancels in the difference.

    Returns:
        ``(low, high)``, the ``level`` interval of the difference (:func:`_stratified_bootstrap`).
    """
    sample_t, baseline_values, other_values, real_t, real_values, edges = map(
        np.asarray, (sample_t, baseline_values, other_values, real_t, real_values, edges))
    if baseline_values.shape != other_values.shape:
        raise ValueError(f"paired sample sets must have one shape, got {baseline_values.shape} and {other_values.shape}")
    binned_comparison(sample_t, other_values, real_t, real_values, edges)  # validates the inputs once

    def difference(s, r):
        baseline, other = (binned_comparison(sample_t[s], values[s], real_t[r], real_values[r], edges).mean_abs_error
                           for values in (baseline_values, other_values))
        return other - baseline

    return _stratified_bootstrap(sample_t, real_t, edges, difference, num_resamples, seed, level)


# ---------------------------------------------------------------------------------------------------
#                                      One call: the quality of samples
# ---------------------------------------------------------------------------------------------------


@dataclass
class SampleQuality:
    """How well samples follow their requested temperature.

    Attributes:
        spearman: Spearman correlation between requested T and sample energy (the real data's own: ≈ 0.94).
        energy: binned mean energy per spin, samples against real data.
        magnetization: binned mean |m|, samples against real data.
        sample_energy: energy per spin of each sample (N,).
        sample_magnetization: |m| of each sample (N,).
    """

    spearman: float
    energy: BinnedComparison
    magnetization: BinnedComparison
    sample_energy: np.ndarray
    sample_magnetization: np.ndarray


def sample_quality(images: torch.Tensor, temperature, real_spins, real_temperature, edges) -> SampleQuality:
    """Binarises sampler output (N, 1, L, L) and compares its energy and |m| with real (M, L, L) spins by bin.

    Args:
        images: sampler output in [0, 1].
        temperature: the requested temperature of each image (N,).
        real_spins: real configurations (M, L, L) in {-1, +1}.
        real_temperature: their temperatures (M,).
        edges: temperature bin edges (B + 1,).
    """
    spins = binarize(images)
    temperature = np.asarray(torch.as_tensor(temperature, dtype=torch.float64).cpu())
    energy, magnetization = energy_per_spin(spins), abs_magnetization(spins)
    return SampleQuality(
        spearman=temperature_spearman(temperature, energy),
        energy=binned_comparison(temperature, energy, real_temperature, energy_per_spin(real_spins), edges),
        magnetization=binned_comparison(temperature, magnetization, real_temperature, abs_magnetization(real_spins),
                                        edges),
        sample_energy=energy,
        sample_magnetization=magnetization,
    )

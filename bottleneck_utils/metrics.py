"""Sample-quality metrics with confidence intervals, on feature vectors: FID and KID through clean-fid, class
accuracy, an Inception-Score-style score, and k-NN precision/recall; and the evaluators that turn a model's images
into those features (the extractors themselves are in :mod:`bottleneck_utils.features`).

FID is ``cleanfid.fid.frechet_distance`` (what ``fid_from_feats`` computes, with the reference statistics cached)
and KID is ``cleanfid.fid.kernel_distance``. The bootstrap, which repeats FID against one reference, uses
:func:`frechet_distance_eig` instead: the same distance from eigenvalues, the reference covariance's square root
computed once (equal to clean-fid's to ~1e-9 relative; several times faster at 2048 dims,
``benchmarks/bench_fid.py``). Precision/recall follow Kynkäänniemi
et al. (2019): a sample is "in" a set's manifold if it lies within the distance of some member to that member's
k-th nearest neighbour.

Confidence intervals (:func:`bootstrap_table`) resample the generated samples with replacement, B times, the
same indices for every setting, so a delta against the baseline is a *paired* bootstrap (pruned and unpruned runs
share labels and initial noise). The reference set stays fixed. The interval is the normal one, value ± z·SE with
SE the standard deviation of the replicates: a resample repeats about a third of its samples, which inflates FID,
so the replicates of FID sit above the point value and percentile intervals need not contain it; the spread
(SE) is not affected by that shift. The seed-to-seed spread of the unpruned run, the noise floor of comparing two
independent runs, is computed in the notebook from several seeds.

Every function refuses feature matrices with NaN/inf, fewer than 2 rows or mismatched widths, and probabilities
that are not rows of a softmax, with a ValueError naming the problem.
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cleanfid import fid as cleanfid_fid
from tqdm.auto import tqdm

from bottleneck_utils import features as extractors
from bottleneck_utils.images import atomic_savez

# ---------------------------------------------------------------------------------------------------
#                                  Reference statistics (the real images)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """The real side of every metric.

    Attributes:
        mu, sigma: mean (f,) and covariance (f, f) of the real features (FID).
        features: real features (m, f) for KID and precision/recall, or None when only statistics are known.
        source: where they came from, for the record.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    source: str = ""
    _sqrt_sigma: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _radii: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def sqrt_sigma(self) -> np.ndarray:
        """√sigma, symmetric, computed on first use and kept (:func:`frechet_distance_eig` reuses it)."""
        if self._sqrt_sigma is None:
            self._sqrt_sigma = symmetric_sqrt(self.sigma)
        return self._sqrt_sigma

    def knn_radii(self, k: int) -> np.ndarray:
        """:func:`knn_radii` of the real ``features``, computed on first use for each k and kept: every setting's
        precision and recall (:meth:`Manifolds.build`) reuses the m × m distances' result."""
        if self.features is None:
            raise ValueError(f"the reference {self.source or ''} has statistics only: precision and recall need its "
                             "features (a reference built from images or features)")
        if k not in self._radii:
            self._radii[k] = knn_radii(self.features, k)
        return self._radii[k]

    @classmethod
    def from_features(cls, features: np.ndarray, source: str = "", kid_features: np.ndarray | None = None):
        """Statistics of all ``features``; ``kid_features`` (default: all) are kept for KID and P/R."""
        features = _check_feature_matrix(features, source or "reference features")
        kept = features if kid_features is None else _check_feature_matrix(kid_features, "kid_features",
                                                                           features.shape[1])
        return cls(features.mean(0), np.cov(features, rowvar=False), kept, source)


def _check_feature_matrix(features, what: str, width: int | None = None) -> np.ndarray:
    """``features`` as a float64 (n >= 2, f) array, or a ValueError naming ``what`` (and the expected width)."""
    features = np.asarray(features, dtype=np.float64) if not isinstance(features, torch.Tensor) \
        else features.detach().cpu().double().numpy()
    if features.ndim != 2 or len(features) < 2 or not np.isfinite(features).all():
        raise ValueError(f"{what} must be a finite (n >= 2, f) matrix, got shape {features.shape}"
                         + ("" if np.isfinite(features).all() else " with NaN or inf"))
    if width is not None and features.shape[1] != width:
        raise ValueError(f"{what} have {features.shape[1]} dims, the reference {width}: use one feature extractor")
    return features


@dataclass
class ReferenceFile:
    """A reference source that :func:`check_reference` has read and checked; no network has run on it yet.

    Attributes:
        path: the file or folder.
        images: (N, H, W, 3) uint8 images of an ``arr_0`` file, or None.
        mu, sigma: clean-mode Inception statistics of a ``mu``/``sigma`` file, or None.
    """

    path: Path
    images: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None


def check_reference(path: str | Path) -> ReferenceFile:
    """Reads and checks a reference source (see :func:`load_reference`) without any feature network.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an empty or unreadable file, unknown keys, wrong shapes or dtypes, NaN, or a folder without images.
    """
    from cleanfid.utils import EXTENSIONS

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference statistics {path} do not exist")
    if path.is_dir():
        if not any(p.suffix.lstrip(".").lower() in EXTENSIONS for p in path.rglob("*") if p.is_file()):
            raise ValueError(f"reference folder {path} holds no images ({', '.join(sorted(EXTENSIONS))})")
        return ReferenceFile(path)
    archive = _read_npz(path)
    if "arr_0" in archive:
        return ReferenceFile(path, images=_check_image_array(archive["arr_0"], path))
    if {"mu", "sigma"} <= archive.keys():
        _check_stats(archive["mu"], archive["sigma"], path)
        return ReferenceFile(path, mu=archive["mu"], sigma=archive["sigma"])
    raise ValueError(f"{path} holds {sorted(archive)}; expected 'arr_0' (images) or 'mu' and 'sigma'")


def load_reference(path: str | Path | ReferenceFile, extractor: torch.nn.Module | None = None, device="cpu",
                   batch_size: int = 50, fid_mode: str = "clean") -> Reference:
    """Inception reference statistics from a user file; every bad input raises before any feature is computed.

    Accepts:
        * a folder of images (e.g. ImageNet validation images): features of all of them in ``fid_mode``;
        * an ``.npz`` with ``arr_0`` images (N, H, W, 3) uint8, the ADM/DiT reference-batch layout: features of
          those images in ``fid_mode`` (ADM's own ``mu``/``sigma`` in that file come from TensorFlow's Inception
          graph, so they are not used);
        * an ``.npz`` with ``mu`` (2048,) and ``sigma`` (2048, 2048) computed in the same ``fid_mode`` (e.g. by
          :func:`save_reference`): FID only; KID and precision/recall need images;
        * a :class:`ReferenceFile` that :func:`check_reference` returned.

    ``fid_mode`` is ``"clean"`` or ``"legacy_tensorflow"`` (:data:`features.FID_MODES`).
    """
    extractors.check_fid_mode(fid_mode)
    source = path if isinstance(path, ReferenceFile) else check_reference(path)
    if source.mu is not None:
        return Reference(np.asarray(source.mu, np.float64), np.asarray(source.sigma, np.float64), None,
                         f"{source.path} (mu/sigma)")
    if source.images is not None:
        images = torch.from_numpy(source.images).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W) in [0, 1]
        features = extractors.inception_features(images, extractor, device, batch_size, mode=fid_mode)
        return Reference.from_features(features, f"{source.path} ({len(images)} images, {fid_mode}-mode Inception)")
    features = extractors.folder_features(source.path, extractor, device, batch_size, mode=fid_mode)
    return Reference.from_features(features, f"{source.path} ({len(features)} images, {fid_mode}-mode Inception)")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if path.stat().st_size == 0:
        raise ValueError(f"reference statistics file {path} is empty")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz ({type(error).__name__}: {error})") from None


def _check_image_array(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3 or len(pixels) < 2:
        raise ValueError(f"{path}: arr_0 must be (N >= 2, H, W, 3) uint8 images, got {pixels.dtype} {pixels.shape}")
    return pixels


def _check_stats(mu: np.ndarray, sigma: np.ndarray, path: Path) -> None:
    dim = extractors.INCEPTION_DIM
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise ValueError(f"{path}: mu must be ({dim},) and sigma ({dim}, {dim}), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu or sigma holds NaN or inf")


def save_reference(reference: Reference, path: str | Path) -> Path:
    """Writes ``mu`` and ``sigma`` as an ``.npz`` that :func:`load_reference` reads back."""
    atomic_savez(Path(path), mu=reference.mu, sigma=reference.sigma)
    return Path(path)


# ---------------------------------------------------------------------------------------------------
#                                        Metrics on feature sets
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """Seeds numpy's global RNG (clean-fid's KID draws from it) and restores its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _pair(features, reference_features) -> tuple[np.ndarray, np.ndarray]:
    reference_features = _check_feature_matrix(reference_features, "reference features")
    return _check_feature_matrix(features, "generated features", reference_features.shape[1]), reference_features


def fid(features: np.ndarray, reference_features: np.ndarray) -> float:
    """FID between two feature sets (n, f) and (m, f): ``cleanfid.fid.fid_from_feats``."""
    return float(cleanfid_fid.fid_from_feats(*_pair(features, reference_features)))


def fid_to_reference(features: np.ndarray, reference: Reference) -> float:
    """FID against cached reference statistics: ``cleanfid.fid.frechet_distance`` (what fid_from_feats calls)."""
    features = _check_feature_matrix(features, "generated features", len(reference.mu))
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    return float(cleanfid_fid.frechet_distance(mu, sigma, reference.mu, reference.sigma))


def symmetric_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (f, f), from its eigendecomposition (negative rounding → 0)."""
    eigenvalues, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def frechet_distance_eig(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                         sqrt_sigma2: np.ndarray | None = None) -> float:
    """The Fréchet distance ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2), its last term from eigenvalues.

    Σ1 Σ2 and √Σ2 Σ1 √Σ2 have the same eigenvalues, and the second is symmetric positive semi-definite, so
    tr √(Σ1 Σ2) = Σᵢ √λᵢ(√Σ2 Σ1 √Σ2): two matrix products and a symmetric eigensolve instead of ``sqrtm``. Pass
    ``sqrt_sigma2`` (:func:`symmetric_sqrt`) to reuse it across many Σ1 against one reference.
    """
    sqrt_sigma2 = symmetric_sqrt(sigma2) if sqrt_sigma2 is None else sqrt_sigma2
    inner = sqrt_sigma2 @ sigma1 @ sqrt_sigma2
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)  # symmetrised against rounding
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def fid_to_reference_eig(features: np.ndarray, reference: Reference) -> float:
    """:func:`fid_to_reference` by :func:`frechet_distance_eig`, with the reference's cached square root."""
    features = _check_feature_matrix(features, "generated features", len(reference.mu))
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    return frechet_distance_eig(mu, sigma, reference.mu, reference.sigma, reference.sqrt_sigma)


def kid(features: np.ndarray, reference_features: np.ndarray, seed: int = 0, num_subsets: int = 100,
        max_subset_size: int = 1000) -> float:
    """KID: ``cleanfid.fid.kernel_distance``, its random subsets drawn from ``seed``."""
    features, reference_features = _pair(features, reference_features)
    if num_subsets < 1 or max_subset_size < 2:
        raise ValueError(f"KID needs num_subsets >= 1 and max_subset_size >= 2, got {num_subsets}, {max_subset_size}")
    with _numpy_seed(seed):
        return cleanfid_fid.kernel_distance(features, reference_features, num_subsets, max_subset_size)


def _check_probs(probs, n: int | None = None) -> np.ndarray:
    """``probs`` as (n, K) float64 rows of a softmax, or a ValueError."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0 or (n is not None and len(probs) != n):
        raise ValueError(f"probs must be ({n if n is not None else 'n'}, K) class probabilities, got {probs.shape}")
    # a float32 softmax sums to 1 within ~1e-6; logits or percentages miss by far more
    if not np.isfinite(probs).all() or (probs < 0).any() or not np.allclose(probs.sum(-1), 1, atol=1e-4):
        raise ValueError("probs must be rows of a softmax (>= 0, each row summing to 1); pass model(x).softmax(-1)")
    return probs


def _check_class_ids(labels: np.ndarray, num_classes: int) -> None:
    """Raises a ValueError unless ``labels`` are integer class ids in 0..num_classes − 1 (the classifier's classes)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got {labels.dtype}")
    outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if outside.size:
        raise ValueError(f"labels {outside[:5].tolist()} are outside 0..{num_classes - 1}, the classes of probs; pass "
                         "the class each sample was generated for")


def class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose classifier argmax is the class they were generated for.

    Raises:
        ValueError: probs that are not softmax rows, or labels that are not ids of probs' classes (a label outside
            them could never be matched, and would only lower the accuracy).
    """
    labels = np.asarray(labels)
    probs = _check_probs(probs, len(labels))
    _check_class_ids(labels, probs.shape[1])
    return float((probs.argmax(-1) == labels).mean())


def inception_style_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))) from a classifier's softmax (Inception Score with one split); at most #classes."""
    probs = _check_probs(probs)
    marginal = probs.mean(0, keepdims=True)  # (1, K)
    kl = (probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12))).sum(-1)  # (N,)
    return float(np.exp(kl.mean()))


def _distances(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), computed in row chunks."""
    b_t = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))
    rows = [torch.cdist(torch.from_numpy(np.ascontiguousarray(a[i : i + chunk], dtype=np.float64)), b_t)
            for i in range(0, len(a), chunk)]
    return torch.cat(rows).numpy()


def knn_radii(features: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in the same set, itself excluded, (n,)."""
    features = _check_feature_matrix(features, "features")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(features):
        raise ValueError(f"k must lie in 1..{len(features) - 1} for {len(features)} points, got {k}")
    return np.partition(_distances(features, features), k, axis=1)[:, k]  # column 0 is the point itself


@dataclass
class Manifolds:
    """Per-sample k-NN memberships, computed once, from which precision and recall of any subset follow.

    Attributes:
        fake_in_real: (n,) bool: generated sample j lies in the real manifold (precision counts these).
        real_in_fake: (m, n) bool: real sample i lies in generated sample j's k-NN ball (recall: any over j).
    """

    fake_in_real: np.ndarray
    real_in_fake: np.ndarray

    @classmethod
    def build(cls, real: np.ndarray, fake: np.ndarray, k: int = 3, real_radii: np.ndarray | None = None) -> Manifolds:
        """Memberships of ``fake`` (n, f) in the k-NN manifold of ``real`` (m, f), and the other way round;
        ``real_radii`` are ``knn_radii(real, k)`` when already known (:meth:`Reference.knn_radii`)."""
        fake, real = _pair(fake, real)
        distances = _distances(real, fake)  # (m, n)
        real_radii = knn_radii(real, k) if real_radii is None else real_radii
        fake_in_real = (distances <= real_radii[:, None]).any(0)  # (n,)
        return cls(fake_in_real, distances <= knn_radii(fake, k)[None, :])

    def precision(self, indices: np.ndarray) -> float:
        return float(self.fake_in_real[indices].mean())

    def recall(self, indices: np.ndarray) -> float:
        return float(self.real_in_fake[:, indices].any(1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii."""
    manifolds = Manifolds.build(real, fake, k)
    everything = np.arange(len(fake))
    return {"precision": manifolds.precision(everything), "recall": manifolds.recall(everything)}


# ---------------------------------------------------------------------------------------------------
#                              All metrics of one setting, and their bootstrap
# ---------------------------------------------------------------------------------------------------


@dataclass
class SampleSet:
    """One setting's generated samples, reduced to what the metrics need.

    Attributes:
        features: (n, f) features (Inception or MNIST classifier).
        labels: (n,) the class each sample was generated for.
        probs: (n, K) classifier softmax, or None (no accuracy or IS-style score then).
        manifolds: k-NN memberships against the reference, or None when the reference has statistics only.
    """

    features: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None = None
    manifolds: Manifolds | None = None

    @classmethod
    def build(cls, features, labels, reference: Reference, probs=None, k: int = 3) -> SampleSet:
        """Checks the features against the reference, and builds the manifolds when the reference has features."""
        features = _check_feature_matrix(features, "generated features", len(reference.mu))
        labels = np.asarray(labels)
        if labels.shape != (len(features),):
            raise ValueError(f"got {len(features)} samples but labels of shape {labels.shape}: one label per sample")
        probs = None if probs is None else _check_probs(probs, len(features))
        if probs is not None:
            _check_class_ids(labels, probs.shape[1])
        manifolds = None if reference.features is None else Manifolds.build(reference.features, features, k,
                                                                            reference.knn_radii(k))
        return cls(features, labels, probs, manifolds)


def metric_values(samples: SampleSet, reference: Reference, indices: np.ndarray | None = None, kid_seed: int = 0,
                  kid_subsets: int = 100, eig_fid: bool = False) -> dict[str, float]:
    """Every metric that the inputs allow, on the samples at ``indices`` (default: all).

    FID always (clean-fid's ``sqrtm``, or :func:`fid_to_reference_eig` with ``eig_fid``); KID when the reference
    keeps features; accuracy and the IS-style score when the samples have classifier probabilities; precision and
    recall when they have manifolds. ``kid_seed`` and ``kid_subsets`` set KID's random subsets.
    """
    indices = np.arange(len(samples.features)) if indices is None else indices
    features = samples.features[indices]
    values = {"FID": (fid_to_reference_eig if eig_fid else fid_to_reference)(features, reference)}
    if reference.features is not None:
        values["KID"] = kid(features, reference.features, kid_seed, kid_subsets)
    if samples.probs is not None:
        values["accuracy"] = class_accuracy(samples.probs[indices], samples.labels[indices])
        values["IS-style"] = inception_style_score(samples.probs[indices])
    if samples.manifolds is not None:
        values["precision"] = samples.manifolds.precision(indices)
        values["recall"] = samples.manifolds.recall(indices)
    return values


def _check_paired(sets: dict[str, SampleSet], baseline: str) -> int:
    if baseline not in sets:
        raise ValueError(f"the baseline {baseline!r} is not among the settings {list(sets)}")
    reference_labels = sets[baseline].labels
    unpaired = [name for name, s in sets.items() if not np.array_equal(s.labels, reference_labels)]
    if unpaired:
        raise ValueError(f"settings {unpaired} were not generated for the baseline's labels; a paired bootstrap "
                         "needs the same labels (and seeds) in every setting")
    return len(reference_labels)


def _kid_subsets(n: int, n_reference: int | None, requested: int, max_subset_size: int = 1000) -> int:
    """1 when every KID subset would be the whole of both sets (then all subsets give the same value)."""
    return 1 if n_reference == n <= max_subset_size else requested


def bootstrap_table(sets: dict[str, SampleSet], reference: Reference, baseline: str, n_boot: int = 100,
                    level: float = 0.95, seed: int = 0, kid_subsets: int = 100, kid_subsets_boot: int = 10,
                    progress: bool = True) -> pd.DataFrame:
    """Every metric of every setting with a normal bootstrap CI, and its paired delta against the baseline.

    Each of the ``n_boot`` rounds draws n sample indices with replacement and evaluates every setting on the
    same indices, so deltas are paired; the rounds' FIDs come from eigenvalues (:func:`fid_to_reference_eig`), the
    point values from clean-fid. The interval is value ± z·SE (see the module docstring). KID uses
    ``kid_subsets`` random subsets for the point value and ``kid_subsets_boot`` inside each round (the subset
    noise only widens its interval), or one when a subset would be the whole of both sets.

    Returns:
        A DataFrame indexed by (setting, metric) with columns ``value, low, high, delta, delta_low, delta_high``
        and ``se, delta_se``.
    """
    n = _check_paired(sets, baseline)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < level < 1, got {n_boot}, {level}")
    n_reference = None if reference.features is None else len(reference.features)
    point = {name: metric_values(s, reference, kid_subsets=_kid_subsets(n, n_reference, kid_subsets))
             for name, s in sets.items()}
    subsets = _kid_subsets(n, n_reference, kid_subsets_boot)
    rounds = {name: {metric: [] for metric in point[name]} for name in sets}
    draws = paired_resamples(n, n_boot, seed)
    for round_, indices in enumerate(tqdm(draws, total=n_boot, desc="bootstrap", disable=not progress)):
        for name, samples in sets.items():
            for metric, value in metric_values(samples, reference, indices, seed + round_, subsets, True).items():
                rounds[name][metric].append(value)
    return _summarise(point, rounds, baseline, level)


def paired_resamples(n: int, n_boot: int, seed: int):
    """The index draws of the package's one paired bootstrap: ``n_boot`` arrays of n indices in 0..n−1, drawn with
    replacement from ``np.random.default_rng(seed)``. Every setting (or both sides of a difference) is evaluated on
    the same draw, so their noise cancels in a paired change."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, n)


def normal_interval(value: float, draws, level: float = 0.95) -> tuple[float, float]:
    """The package's one bootstrap interval: ``value`` ± z·SE, SE the standard deviation (ddof 1) of the bootstrap
    ``draws`` and z the normal quantile of ``level`` (why normal rather than percentile: the module docstring)."""
    from scipy.stats import norm

    half = norm.ppf((1 + level) / 2) * np.asarray(draws, dtype=float).std(ddof=1)
    return value - half, value + half


def _summarise(point: dict, rounds: dict, baseline: str, level: float) -> pd.DataFrame:
    rows = []
    for name, metrics in point.items():
        for metric, value in metrics.items():
            draws = np.asarray(rounds[name][metric])
            changes = draws - np.asarray(rounds[baseline][metric])
            delta = value - point[baseline][metric]
            low, high = normal_interval(value, draws, level)
            delta_low, delta_high = normal_interval(delta, changes, level)
            rows.append({"setting": name, "metric": metric, "value": value, "low": low, "high": high, "delta": delta,
                         "delta_low": delta_low, "delta_high": delta_high, "se": draws.std(ddof=1),
                         "delta_se": changes.std(ddof=1)})
    return pd.DataFrame(rows).set_index(["setting", "metric"])


# ---------------------------------------------------------------------------------------------------
#                          Evaluators: images → SampleSet, chosen by the model
# ---------------------------------------------------------------------------------------------------


@dataclass
class Evaluator:
    """Turns generated images into a :class:`SampleSet` against a fixed reference.

    Attributes:
        name: ``"MNIST-FID"`` (the MNIST classifier's features and softmax) or ``"Inception FID"``.
        reference: the real side.
        features_of: images (N, C, H, W) in [0, 1] → (features (N, f), probs (N, K) or None).
        k: neighbours of the precision/recall manifolds.
        feature_network: the network behind ``features_of``, in words (a sampler card's ``feature_network``).
        fid_mode: clean-fid's mode of an Inception FID (:data:`features.FID_MODES`); None for other networks.
    """

    name: str
    reference: Reference
    features_of: object
    k: int = 3
    feature_network: str = "unnamed"
    fid_mode: str | None = None

    def sample_set(self, images: torch.Tensor, labels) -> SampleSet:
        features, probs = self.features_of(images)
        return SampleSet.build(features, np.asarray(labels), self.reference, probs, self.k)


INCEPTION_FEATURE_NETWORK = "Inception-v3 (clean-fid's weights, 2048-d pool features)"


def inception_evaluator(reference_stats: str | Path, device="cpu", batch_size: int = 50, k: int = 3,
                        fid_mode: str = "clean") -> Evaluator:
    """Inception FID in a clean-fid mode against user-supplied reference statistics (:func:`load_reference`).

    Args:
        reference_stats: see :func:`load_reference`.
        device, batch_size: where and how many images at a time the Inception network runs.
        k: neighbours of the precision/recall manifolds.
        fid_mode: ``"clean"`` (clean-fid's resize, the default) or ``"legacy_tensorflow"`` (the TensorFlow-style
            resize inside the network, as the ADM/DiT evaluation suite), both offline on the shipped weights.

    The mode and the reference are checked before the Inception network loads, so a bad file fails at once.

    Raises:
        ValueError: an unknown mode, or a bad reference.
        ModuleNotFoundError, FileNotFoundError: the Inception weights are not installed (one line, naming the fix).
    """
    extractors.check_fid_mode(fid_mode)
    if not str(reference_stats).strip():
        raise ValueError("Inception FID needs reference statistics: pass reference_stats= an .npz with mu/sigma "
                         "(or arr_0 images) or a folder of real images, e.g. ImageNet validation images")
    source = check_reference(reference_stats)
    extractor = extractors.inception_extractor(fid_mode)
    reference = load_reference(source, extractor, device, batch_size, fid_mode)
    name = "Inception FID" if fid_mode == "clean" else f"Inception FID ({fid_mode})"
    return Evaluator(name, reference, lambda images: (
        extractors.inception_features(images, extractor, device, batch_size, mode=fid_mode), None), k,
        INCEPTION_FEATURE_NETWORK, fid_mode)


"""The head-and-tail chapter's measurements: the coordinates of c = y + t at the first sampling step, split into a
magnitude head and a near-zero tail; the threshold sweep s(τ); the variance across classes; and whether the head or
the tail carries the class (a nearest-centroid probe and t-SNE views). Also its figures and its verdict rows.

The claims are judged on one model (the book's default: the in-regime recipe's first seed) under the regime
preconditions every chapter shares (:func:`regime.precondition_rows`); the models shown beside it (a seed replicate,
``mnist-dit`` as the small-model contrast) are measured and judged by the same rows (:func:`claims_beside`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE

from bottleneck_utils import stats
from bottleneck_utils.chapters import paper, plots, regime, report
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from bottleneck_utils.models import Bundle

# the notebook's papermill parameters: name → accepted type(s) (report.notebook_parameters reads them)
PARAMETERS = {"model": str, "device": str, "dtype": str, "seed": int, "family": (str, type(None)),
              "freq_shift": (int, type(None)), "num_steps": int, "head_share": float, "tail_share": float,
              "probe_timesteps": int, "tsne_points": int, "beside": list}
PAPER_TAUS = (0.01, 0.02, 0.05, 1.0, 5.0)  # the paper's thresholds, applied to this model in a table
HALF_SHARE, MOST_SHARE = 0.5, 0.9  # the shares of the variance across classes whose dimensions are counted


def check_shares(head_share: float, tail_share: float) -> None:
    """Raises ValueError unless both shares lie in (0, 1) and the head and the tail do not overlap."""
    if not (0 < head_share < 1 and 0 < tail_share < 1 and head_share + tail_share <= 1):
        raise ValueError(f"head_share and tail_share must be in (0, 1) with a sum <= 1, got {head_share}, {tail_share}")


def paper_values() -> dict[str, float]:
    """The paper's numbers the chapter's prose quotes, by glue name (from ``paper.BARS``, ``paper.MAGNITUDES`` and
    the regime bands, :func:`regime.paper_bands`)."""
    bars, bands = paper.BARS, regime.paper_bands()
    return {"paper_npr_low": bands["npr_c"][0], "paper_npr_high": bands["npr_c"][1],
            "paper_cos_y_low": bands["cos_y"][0],
            "bar_tail_share": bars["tail_share_below_tau"], "bar_tau": bars["tail_tau"],
            "bar_variance_dims": bars["variance_dims"], "bar_var_low": bars["mean_variance_range"][0],
            "bar_var_high": bars["mean_variance_range"][1],
            "paper_head_low": paper.MAGNITUDES["REPA/SiT head"][0],
            "paper_head_high": paper.MAGNITUDES["REPA/SiT head"][1],
            "paper_dit_max": paper.MAGNITUDES["DiT-XL/2 max |c_i|"]}


def nearest_centroid_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of a nearest-centroid probe fitted on the even-indexed timesteps and tested on the odd ones.

    Args:
        features: (T, n, k): one point per timestep and class.
        labels: (T, n): the class of each point.
    """
    train, test = features[0::2], features[1::2]  # split by timestep: (T/2, n, k) each
    centroids = train.mean(0)  # (n, k)
    predicted = torch.cdist(test.reshape(-1, test.shape[-1]), centroids).argmin(-1)  # (T/2 · n,)
    return (predicted == labels[1::2].reshape(-1)).double().mean().item()


def magnitudes(bundle: Bundle, t0: float, head_share: float, tail_share: float) -> dict:
    """The head and tail of the class-mean c at ``t0`` (Figs. 5 and 6).

    Returns:
        ``c`` (n, D), ``c_mean`` and ``magnitude`` = |c̄| (D,), ``order`` (coordinates by decreasing magnitude),
        ``D``, ``n_head``, ``n_tail``, ``head_dims``, ``tail_dims``, ``head_tau``, ``tail_tau`` (the smallest head
        and largest tail magnitude), ``energy_head`` (the head's share of ‖c̄‖²), ``npr_c``, ``cos_y`` (the
        regime's two statistics, :func:`stats.summary`'s keys), ``max_c`` and ``head_from_t`` (how many head
        coordinates are also the largest of t alone).
    """
    c = conditional_vectors(bundle, timesteps=t0).double().cpu()  # (n, D)
    y = conditional_vectors(bundle, timesteps=t0, part="y").double().cpu()  # (n, D)
    t_vector = conditional_vectors(bundle, timesteps=t0, part="t")[0].double().cpu()  # (D,)
    c_mean = c.mean(0)  # (D,): the mean vector over classes
    magnitude = c_mean.abs()
    order = magnitude.argsort(descending=True)
    D = len(c_mean)
    n_head, n_tail = max(1, round(head_share * D)), max(1, round(tail_share * D))
    head_dims, tail_dims = order[:n_head], order[-n_tail:]
    return {"c": c, "c_mean": c_mean, "magnitude": magnitude, "order": order, "D": D, "n_head": n_head,
            "n_tail": n_tail, "head_dims": head_dims, "tail_dims": tail_dims,
            "head_tau": magnitude[head_dims].min().item(), "tail_tau": magnitude[tail_dims].max().item(),
            "energy_head": stats.head_energy_share(c_mean, head_share).item(),  # the top n_head's share of ‖c̄‖²
            "npr_c": stats.mean_npr(c).item(), "cos_y": stats.mean_offdiag_cosine(y).item(),
            "max_c": magnitude.max().item(),
            "head_from_t": len(set(t_vector.abs().argsort(descending=True)[:n_head].tolist())
                               & set(head_dims.tolist()))}


def thresholds(c: torch.Tensor, c_mean: torch.Tensor) -> dict:
    """The tail fraction s(τ) over a log grid of τ (Fig. 11), and the paper's thresholds applied to this model.

    Args:
        c: (n, D), one vector per class.
        c_mean: (D,), their mean.

    Returns:
        ``taus``, ``sweep`` (:func:`stats.tau_sweep` of the mean vector), ``per_class`` (n, len(taus)),
        ``paper_taus`` (a table over :data:`PAPER_TAUS`) and ``s_tail_001`` (s at the first, τ = 0.01).
    """
    magnitude = c_mean.abs()
    taus = np.logspace(-4, np.log10(max(10.0, 2 * magnitude.max().item())), 200)
    paper_taus = pd.DataFrame({"τ": list(PAPER_TAUS)})
    paper_taus["s_tail (mean vector)"] = [stats.tail_fraction(c_mean, tau).item() for tau in paper_taus["τ"]]
    paper_taus["dims below τ"] = [int((magnitude < tau).sum()) for tau in paper_taus["τ"]]
    paper_taus["dims above τ"] = [int((magnitude > tau).sum()) for tau in paper_taus["τ"]]
    return {"taus": taus, "sweep": stats.tau_sweep(c_mean, taus), "per_class": stats.tail_fraction(c, taus),
            "paper_taus": paper_taus, "s_tail_001": float(paper_taus["s_tail (mean vector)"][0])}


def class_variance(c: torch.Tensor, head_dims: torch.Tensor) -> dict:
    """The variance of c across classes per coordinate (Fig. 9) and how few coordinates hold it.

    Args:
        c: (n, D), one vector per class.
        head_dims: the magnitude head, compared with the highest-variance coordinates.

    Returns:
        ``variance`` (D,), ``cumulative`` (the share held by the top k, by k), ``dims_50`` and ``dims_90`` (how
        many coordinates hold :data:`HALF_SHARE` and :data:`MOST_SHARE` of it), ``mean_variance`` and ``overlap``
        (how many of the ``len(head_dims)`` highest-variance coordinates are in the head).
    """
    variance = stats.per_dim_variance(c)  # (D,)
    ranked = variance.sort(descending=True).values
    cumulative = ranked.cumsum(0) / ranked.sum()
    return {"variance": variance, "cumulative": cumulative, "dims_50": int((cumulative < HALF_SHARE).sum()) + 1,
            "dims_90": int((cumulative < MOST_SHARE).sum()) + 1, "mean_variance": variance.mean().item(),
            "overlap": len(set(variance.argsort(descending=True)[:len(head_dims)].tolist()) & set(head_dims.tolist()))}


def probe(bundle: Bundle, probe_timesteps: int, head_dims: torch.Tensor, tail_dims: torch.Tensor) -> dict:
    """Does the head or the tail carry the class (Fig. 13, with a number)?

    Each point is c(y, t) for one class and one of ``probe_timesteps`` timesteps spread over the schedule.

    Returns:
        ``points`` (T, n, D), ``labels`` (T, n), ``views`` (name → coordinates: full, head only, tail only),
        ``accuracy`` (view name → :func:`nearest_centroid_accuracy`) and ``chance`` (1 / n).
    """
    grid = np.linspace(0, bundle.time.t_max, probe_timesteps)
    points = conditional_vectors(bundle, timesteps=grid).double().cpu()  # (T, n, D)
    labels = torch.arange(points.shape[1]).expand(points.shape[0], -1)  # (T, n)
    views = {"full": torch.arange(points.shape[-1]), "head only": head_dims, "tail only": tail_dims}
    return {"points": points, "labels": labels, "views": views, "chance": 1 / points.shape[1],
            "accuracy": {name: nearest_centroid_accuracy(points[..., dims], labels) for name, dims in views.items()}}


def measure(bundle: Bundle, num_steps: int, head_share: float, tail_share: float, probe_timesteps: int) -> dict:
    """Everything the chapter shows of one model, at t₀ of ``num_steps`` sampler steps: the entries of
    :func:`magnitudes`, :func:`thresholds`, :func:`class_variance` and :func:`probe`, and ``t0``."""
    check_shares(head_share, tail_share)
    t0 = first_sampling_timestep(bundle, num_steps)
    results = {"t0": t0, **magnitudes(bundle, t0, head_share, tail_share)}
    results |= thresholds(results["c"], results["c_mean"])
    results |= class_variance(results["c"], results["head_dims"])
    return results | probe(bundle, probe_timesteps, results["head_dims"], results["tail_dims"])


def measure_models(bundles: dict[str, Bundle], num_steps: int, head_share: float, tail_share: float,
                   probe_timesteps: int) -> dict[str, dict]:
    """:func:`measure` of every model, by name, in the given order (the judged model first, then those beside it)."""
    check_shares(head_share, tail_share)
    return {name: measure(bundle, num_steps, head_share, tail_share, probe_timesteps) for name, bundle in bundles.items()}


def _paper_column() -> dict[str, str]:
    """The paper's value of each row of :func:`beside_table`, as text (numbers from ``paper`` and the bands)."""
    bars, bands, magnitudes = paper.BARS, regime.paper_bands(), paper.MAGNITUDES
    low_head, high_head = magnitudes["REPA/SiT head"]
    return {"nPR(c) at t₀ (mean over classes)": f"{bands['npr_c'][0]:.2%}–{bands['npr_c'][1]:.2%} (Table 4)",
            "cos(y) at t₀": f"{bands['cos_y'][0]:.4f}–{bands['cos_y'][1]:.4f} (Table 4)",
            "max |c̄ᵢ|": f"{magnitudes['DiT-XL/2 max |c_i|']:g} (DiT-XL/2), {low_head:g}–{high_head:g} (REPA/SiT)",
            f"share of c̄'s coordinates below τ = {bars['tail_tau']}": f"> {bars['tail_share_below_tau']:.0%} (Fig. 11)",
            "the head's share of ‖c̄‖²": f"≥ {bars['head_energy']:.0%} (reading)",
            "dims holding 90% of the variance across classes": f"≤ {bars['variance_dims']:.1%} of D (Fig. 9)",
            "mean variance across classes": f"{bars['mean_variance_range'][0]:.1e} to "
                                            f"{bars['mean_variance_range'][1]:.1e} (Fig. 9)",
            "probe accuracy: full, head only, tail only (chance)": "head keeps the clusters, tail loses them "
                                                                   "(Fig. 13, t-SNE only)"}


def _our_column(r: dict) -> list[str]:
    """One model's values in :func:`beside_table`'s row order."""
    accuracy = r["accuracy"]
    return [f"{r['npr_c']:.2%}", f"{r['cos_y']:.4f}", f"{r['max_c']:.3f}", f"{r['s_tail_001']:.1%}",
            f"{r['energy_head']:.1%} in {r['n_head']} of {r['D']} dims",
            f"{r['dims_90']} of {r['D']} ({r['dims_90'] / r['D']:.1%})", f"{r['mean_variance']:.2e}",
            f"{accuracy['full']:.1%}, {accuracy['head only']:.1%}, {accuracy['tail only']:.1%} ({r['chance']:.1%})"]


def beside_table(results_by_model: dict[str, dict]) -> pd.DataFrame:
    """The chapter's numbers on every model beside the paper's: one row per statistic, the paper's column, then one
    column per model (the judged one first), each marked in or out of the regime (:func:`regime.in_regime`)."""
    bands, rows = regime.paper_bands(), _paper_column()
    columns = {"paper": list(rows.values())}
    for name, results in results_by_model.items():
        where = "in the regime" if regime.in_regime(results, bands) else "outside the regime"
        columns[f"{name} ({where})"] = _our_column(results)
    return pd.DataFrame(columns, index=pd.Index(list(rows), name="statistic"))


# ---------------------------------------------------------------------------------------------------
#                                               Figures
# ---------------------------------------------------------------------------------------------------


def magnitudes_figure(results: dict, name: str):
    """Figs. 5 and 6: the histogram of |cᵢ|, the mean vector, and the sorted magnitudes with the head and tail cut."""
    magnitude, n_head, n_tail, D = results["magnitude"], results["n_head"], results["n_tail"], results["D"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    plots.magnitude_histogram(axes[0], results["c"])
    plots.mean_vector(axes[1], results["c"])
    axes[2].semilogy(magnitude[results["order"]].numpy(), color="C0")
    axes[2].axvline(n_head, color="C3", linestyle="--", label=f"head: top {n_head}")
    axes[2].axvline(D - n_tail, color="C2", linestyle="--", label=f"tail: bottom {n_tail}")
    axes[2].set(xlabel="rank", ylabel="|c̄ᵢ| (sorted)", title="sorted magnitudes")
    axes[2].legend()
    fig.suptitle(f"{name}, c = y + t at t₀ = {results['t0']:g}")
    fig.tight_layout()
    return fig


def thresholds_figure(results: dict, name: str):
    """Fig. 11: s(τ) of the mean vector, with the range of the per-class tail fractions."""
    taus, per_class = results["taus"], results["per_class"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.fill_between(taus, per_class.min(0).values, per_class.max(0).values, color="C0", alpha=0.2,
                    label="tail, class range")
    plots.tau_curves(ax, results["sweep"])  # of the mean vector
    fig.suptitle(name)
    fig.tight_layout()
    return fig


def variance_figure(results: dict, name: str):
    """Fig. 9: the variance across classes per coordinate, and the share of it held by the top k coordinates."""
    D, dims_90 = results["D"], results["dims_90"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    axes[0].bar(np.arange(D), results["variance"].numpy(), color="C0", width=1.0)
    axes[0].set(xlabel="coordinate i", ylabel="variance across classes", title="per-dimension variance")
    axes[1].plot(np.arange(1, D + 1), results["cumulative"].numpy(), color="C0")
    axes[1].axhline(MOST_SHARE, color="0.5", linestyle=":")
    axes[1].set(xscale="log", xlabel="number of dimensions (ranked by variance)", ylabel="share of total variance",
                title=f"{dims_90} dims hold {MOST_SHARE:.0%} of the variance")
    low_var, high_var = paper.BARS["mean_variance_range"]
    fig.suptitle(f"{name}: mean variance {results['mean_variance']:.2e} (paper: {low_var:.1e} to {high_var:.1e})")
    fig.tight_layout()
    return fig


def tsne_figure(results: dict, tsne_points: int, seed: int, name: str):
    """Fig. 13: a t-SNE of at most ``tsne_points`` probe points in each view, coloured by class."""
    points, accuracy, chance = results["points"], results["accuracy"], results["chance"]
    rng = np.random.default_rng(seed)
    flat_labels = results["labels"].reshape(-1).numpy()
    keep = rng.choice(len(flat_labels), size=min(tsne_points, len(flat_labels)), replace=False)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, (view, dims) in zip(axes, results["views"].items()):
        features = points[..., dims].reshape(-1, len(dims))[keep].numpy()
        init = "pca" if len(dims) >= 2 else "random"  # a one-coordinate head has no second principal direction
        embedded = TSNE(perplexity=min(30, len(keep) - 1), random_state=seed, init=init).fit_transform(features)
        ax.scatter(embedded[:, 0], embedded[:, 1], c=flat_labels[keep], cmap="tab10" if chance >= 0.1 else "hsv", s=6)
        ax.set(title=f"{view} ({len(dims)} dims): probe accuracy {accuracy[view]:.1%}", xticks=[], yticks=[])
    fig.suptitle(f"{name}: t-SNE of c(y, t), coloured by class (chance {chance:.1%})")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
#                                               Verdict
# ---------------------------------------------------------------------------------------------------


def claims(results: dict, head_share: float) -> list[dict]:
    """The chapter's verdict rows: the regime preconditions every chapter shares (:func:`regime.precondition_rows`:
    c is sparse, y alone is aligned) and the scale precondition of an absolute τ, then the claims of §3 and
    Figs. 9–13, each requiring the regime (and the τ claim its scale too).

    Args:
        results: at least ``npr_c``, ``cos_y``, ``max_c``, ``s_tail_001``, ``energy_head``, ``n_head``,
            ``dims_90``, ``D``, ``mean_variance``, ``accuracy`` and ``chance``, as :func:`measure` returns them.
        head_share: the head's share of the coordinates, named in the claim.
    """
    bars, max_c = paper.BARS, results["max_c"]
    s_tail_001, energy_head, n_head = results["s_tail_001"], results["energy_head"], results["n_head"]
    dims_90, D, mean_variance = results["dims_90"], results["D"], results["mean_variance"]
    accuracy, chance = results["accuracy"], results["chance"]
    sparse = regime.precondition_rows(results, regime.paper_bands())
    scale = report.precondition_row(
        "c has the paper's scale, so its absolute τ transfers", paper=f"max |c̄ᵢ| ≥ {bars['scale_max_c']} (DiT-XL/2)",
        ours=f"{max_c:.3f}", value=max_c, op=">=", bar=bars["scale_max_c"])
    margin = accuracy["full"] - chance
    return [*sparse, scale,
            report.claim_row(f"most coordinates of the mean vector lie below τ = {bars['tail_tau']} (Fig. 11)",
                             paper=f"> {bars['tail_share_below_tau']:.0%}", ours=f"{s_tail_001:.1%}",
                             value=s_tail_001, op=">", bar=bars["tail_share_below_tau"], requires=[*sparse, scale]),
            report.claim_row(f"the head (top {head_share:.0%} of dims) holds most of the magnitude (§3)",
                             paper=f"≥ {bars['head_energy']:.0%} of ‖c̄‖² (reading)",
                             ours=f"{energy_head:.1%} in {n_head} dims", value=energy_head, op=">=",
                             bar=bars["head_energy"], requires=sparse),
            report.claim_row("a few dims carry 90% of the variance across classes (Fig. 9)",
                             paper=f"≤ {bars['variance_dims']:.1%} of dims", ours=f"{dims_90} of {D} ({dims_90 / D:.1%})",
                             value=dims_90 / D, op="<=", bar=bars["variance_dims"], requires=sparse),
            report.claim_row("the mean variance is small but non-zero (Fig. 9)",
                             paper=f"{bars['mean_variance_range'][0]:.1e} to {bars['mean_variance_range'][1]:.1e}",
                             ours=f"{mean_variance:.2e}", value=mean_variance, op="in", bar=bars["mean_variance_range"],
                             requires=sparse),
            report.claim_row("head-only keeps the class (Fig. 13)",
                             paper=f"≥ {bars['probe_kept']:.0%} of the full accuracy (reading)",
                             ours=f"head {accuracy['head only']:.1%} of full {accuracy['full']:.1%}",
                             value=accuracy["head only"] / accuracy["full"], op=">=", bar=bars["probe_kept"],
                             requires=sparse),
            report.claim_row("tail-only loses the class (Fig. 13)",
                             paper=f"< {bars['probe_lost']:.0%} of the full margin over chance (reading)",
                             ours=f"tail {accuracy['tail only']:.1%}, chance {chance:.1%}",
                             value=(accuracy["tail only"] - chance) / margin if margin > 0 else None, op="<",
                             bar=bars["probe_lost"], requires=sparse)]


def claims_beside(results_by_model: dict[str, dict], head_share: float) -> pd.DataFrame:
    """:func:`claims` judged on every model, the judged one first (:func:`regime.verdicts_beside`)."""
    return regime.verdicts_beside({name: claims(results, head_share) for name, results in results_by_model.items()})

"""The "Continuous conditions" chapter's measurements, figures and verdict rows, on ``ising-dit`` (an Ising-temperature
model organism) or another continuous-condition model.

:func:`measure` does the chapter's computation (sample quality against the real Ising configurations, the statistics
of ``c = e(T) + t`` at t₀ and over the schedule, and the pruning table); the figure and table functions draw from
its results; :func:`glued` gives every value the page glues and :func:`claims` the verdict rows. The SD3 row is
measured by :func:`measure_text` only when a text model is named.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from tqdm.auto import tqdm

from bottleneck_utils import integrity, masks, sampling, stats, text_conditions
from bottleneck_utils.chapters import paper, plots, report
from bottleneck_utils.continuous import SINUSOID_SCALE
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep, timestep_sweep
from bottleneck_utils.models import Bundle, embedded_dir, load
from bottleneck_utils.organisms import data, ising
from bottleneck_utils.sampling import sample

# name → accepted type(s) of each papermill parameter (the values are written once, in the notebook's parameters cell)
PARAMETERS = {"model": str, "device": str, "dtype": str, "seed": int, "num_steps": int, "cfg_scale": (int, float),
              "n_grid": int, "n_samples": int, "n_bins": int, "n_bootstrap": int, "tail_fractions": list,
              "last_k": int, "head_ks": list, "text_model": (str, type(None)), "text_prompts_file": (str, type(None)),
              "text_device": str}
TIGHTER_BAR = 0.999  # one more nine than the paper's "> 0.99"
PROMPT_BATCH = 64  # prompts encoded at once by measure_text


def head_setting(k: int) -> str:
    """The pruning-table name of the setting that zeroes the ``k`` largest coordinates of ``c̄`` at every step."""
    return f"head top-{k}, tᵢ"


def load_model(parameters: dict) -> Bundle:
    """Seeds torch and loads the chapter's model.

    Args:
        parameters: the chapter's parameters (:data:`PARAMETERS`); reads ``model``, ``device``, ``dtype``, ``seed``.

    Raises:
        ValueError: the model is class-conditional.
    """
    torch.manual_seed(parameters["seed"])
    bundle = load(parameters["model"], device=parameters["device"], dtype=parameters["dtype"])
    if bundle.condition is None:
        raise ValueError(f"{parameters['model']} is class-conditional; this chapter needs a continuous-condition model "
                         "(ising-dit)")
    return bundle


def check_pruning_parameters(tail_fractions: list, last_k: int, head_ks: list, num_steps: int) -> None:
    """Raises ValueError unless every tail fraction is in (0, 1), ``1 <= last_k <= num_steps`` and every head k >= 1."""
    if not all(0 < f < 1 for f in tail_fractions) or not 1 <= last_k <= num_steps or not all(k >= 1 for k in head_ks):
        raise ValueError(f"need tail_fractions in (0, 1), 1 <= last_k <= num_steps, head_ks >= 1; got {tail_fractions}, "
                         f"{last_k}, {head_ks}")


# ---------------------------------------------------------------------------------------------------
#                                             Measurements
# ---------------------------------------------------------------------------------------------------


def evaluate(images: torch.Tensor, requested: torch.Tensor, real: data.IsingData, edges: np.ndarray,
             n_bootstrap: int, seed: int) -> dict:
    """Quality of samples at the requested temperatures against the real configurations.

    Args:
        images: the samples, (N, 1, H, W).
        requested: the temperature each sample was asked for, (N,).
        real: the real configurations and their temperatures.
        edges: the temperature bins' edges.
        n_bootstrap: resamples of the confidence interval.
        seed: the bootstrap's seed.

    Returns:
        ``quality`` (:class:`ising.SampleQuality`), ``spearman`` (requested T against sample energy), ``dE`` (binned
        mean |ΔE|) with its 95% bootstrap CI ``dE_low``–``dE_high``, and ``dm`` (binned mean |Δ|m||).
    """
    quality = ising.sample_quality(images, requested, real.spins, real.temperature, edges)
    ci = ising.bootstrap_mean_abs_error(requested.numpy(), quality.sample_energy, real.temperature,
                                        ising.energy_per_spin(real.spins), edges, num_resamples=n_bootstrap,
                                        seed=seed)
    return {"quality": quality, "spearman": quality.spearman,
            "dE": quality.energy.mean_abs_error, "dE_low": ci[0], "dE_high": ci[1],
            "dm": quality.magnetization.mean_abs_error}


def measure_quality(bundle: Bundle, real: data.IsingData, *, n_samples: int, n_bins: int, num_steps: int,
                    cfg_scale: float, n_bootstrap: int, seed: int) -> dict:
    """Samples ``n_samples`` temperatures evenly spaced over the trained range and compares them with the real data.

    Returns:
        ``real`` and its ``real_energy``/``real_m``, the bins' ``edges``, the ``requested`` temperatures, the
        trained range ``low``/``high``, the ``baseline_images`` and their :func:`evaluate` result ``baseline``.
    """
    low, high = bundle.condition.low, bundle.condition.high
    edges = np.linspace(low, high, n_bins + 1)
    requested = torch.linspace(low, high, n_samples, dtype=torch.float64)  # (n_samples,)
    images = sample(bundle, requested, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed)
    return {"real": real, "real_energy": ising.energy_per_spin(real.spins),
            "real_m": ising.abs_magnetization(real.spins), "edges": edges, "requested": requested, "low": low,
            "high": high, "baseline_images": images,
            "baseline": evaluate(images, requested, real, edges, n_bootstrap, seed)}


def measure_statistics(bundle: Bundle, *, n_grid: int, num_steps: int) -> dict:
    """The statistics of ``c = e(T) + t`` at t₀ over a grid of temperatures, and the mean cosine over the schedule.

    Returns:
        ``t0``, the model's ``time_kind``, the temperature ``grid``, ``y`` (n_grid, D: e(T) alone), ``t_vector`` (D,), ``c`` (n_grid, D),
        ``ours`` (:func:`stats.summary` with detail), the timestep ``sweep``, the shares of timesteps whose mean
        cosine exceeds the paper's bar (``above_99``) and :data:`TIGHTER_BAR` (``above_999``), and ``c_mean``
        (D,: the mean vector over temperatures).
    """
    t0 = first_sampling_timestep(bundle, num_steps)
    grid = bundle.condition.grid(n_grid)  # (n_grid,) temperatures
    y = conditional_vectors(bundle, grid, t0, part="y")  # (n_grid, D): e(T) alone
    t_vector = conditional_vectors(bundle, grid, t0, part="t")[0]  # (D,)
    c = y + t_vector  # (n_grid, D): c = e(T) + t₀
    sweep = timestep_sweep(bundle, np.arange(0, int(bundle.time.t_max) + 1), labels=grid)
    return {"t0": t0, "grid": grid, "y": y, "t_vector": t_vector, "c": c,
            "ours": stats.summary(y, t_vector, detail=True), "sweep": sweep,
            "above_999": (sweep["cosine"] > TIGHTER_BAR).double().mean().item(),
            "above_99": (sweep["cosine"] > paper.BARS["schedule_cosine"]).double().mean().item(),
            "c_mean": c.double().mean(0).cpu(), "time_kind": bundle.time.kind}


def pruning_settings(bundle: Bundle, *, tail_fractions: list, last_k: int, head_ks: list, num_steps: int,
                     seed: int) -> dict:
    """The pruning table's masks: a global tail mask per fraction at every step; the one closest to Table 7's share
    at t₀ only, in the last ``last_k`` steps and as a random mask of its size; each head top-k with a random control.

    Returns:
        ``tail_masks`` (fraction → mask), ``names`` (fraction → setting name), ``reference_fraction`` (the fraction
        closest to Table 7's share) and ``settings``: (name, mask, schedule) in the table's order.
    """
    check_pruning_parameters(tail_fractions, last_k, head_ks, num_steps)
    tail_masks = {}
    for fraction in tail_fractions:
        tau = masks.threshold_for_fraction(bundle, fraction, num_steps=num_steps, granularity="global")
        tail_masks[fraction] = masks.tail_mask(bundle, tau, num_steps=num_steps, granularity="global")
    reference_fraction = min(tail_fractions, key=lambda f: abs(f - paper.TABLE7_SHARE))  # closest to Table 7's share
    reference = tail_masks[reference_fraction]
    names = {fraction: f"tail {m.removed_fraction:.0%}, tᵢ" for fraction, m in tail_masks.items()}
    settings = [(names[fraction], m, "every") for fraction, m in tail_masks.items()]
    settings += [(f"tail {reference.removed_fraction:.0%}, t₀ only", reference, "first"),
                 (f"tail {reference.removed_fraction:.0%}, last-{last_k}", reference, masks.Schedule("last", last_k)),
                 (f"random {reference.removed_fraction:.0%}, tᵢ", masks.random_mask(reference, seed), "every")]
    for k in head_ks:
        head = masks.topk_mask(bundle, k, num_steps=num_steps, granularity="global")
        settings += [(head_setting(k), head, "every"),
                     (f"random {k} dims, tᵢ", masks.random_mask(head, seed), "every")]
    return {"tail_masks": tail_masks, "names": names, "reference_fraction": reference_fraction, "settings": settings}


def measure_pruning(bundle: Bundle, quality: dict, *, tail_fractions: list, last_k: int, head_ks: list,
                    num_steps: int, cfg_scale: float, n_bootstrap: int, seed: int) -> dict:
    """Samples every :func:`pruning_settings` setting from the baseline's temperatures and noise.

    Args:
        bundle: the model.
        quality: :func:`measure_quality`'s result (the baseline and the real data).

    Returns:
        ``pruned`` (setting → its ``mask`` and :func:`evaluate` result, with the paired bootstrap interval of its
        change of |ΔE| against the baseline, ``delta_low``–``delta_high``; the baseline first), the ``pruning`` table,
        ``reference_removed`` (the reference tail mask's removed share), the setting names ``tail_setting``,
        ``random_setting``, ``largest_setting``, the ``largest_removed`` share, ``head_ks``, and the keys of
        :func:`pruning_settings`.
    """
    plan = pruning_settings(bundle, tail_fractions=tail_fractions, last_k=last_k, head_ks=head_ks,
                            num_steps=num_steps, seed=seed)
    requested, real, edges, baseline = quality["requested"], quality["real"], quality["edges"], quality["baseline"]
    pruned = {"baseline": {"mask": None, **baseline}}
    for name, mask, schedule in tqdm(plan["settings"], desc="pruning settings"):
        images = sample(bundle, requested, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, mask=mask,
                        schedule=schedule, progress=False)
        pruned[name] = {"mask": mask, **evaluate(images, requested, real, edges, n_bootstrap, seed)}
    for name, result in pruned.items():
        result["delta_low"], result["delta_high"] = ising.bootstrap_paired_difference(
            requested.numpy(), baseline["quality"].sample_energy, result["quality"].sample_energy, real.temperature,
            quality["real_energy"], edges, num_resamples=n_bootstrap, seed=seed)
    reference = plan["tail_masks"][plan["reference_fraction"]]
    largest = max(tail_fractions)
    return {**plan, "pruned": pruned, "pruning": pruning_frame(pruned), "reference_removed": reference.removed_fraction,
            "tail_setting": plan["names"][plan["reference_fraction"]],
            "random_setting": f"random {reference.removed_fraction:.0%}, tᵢ", "largest_setting": plan["names"][largest],
            "largest_removed": plan["tail_masks"][largest].removed_fraction, "head_ks": list(head_ks)}


def pruning_frame(pruned: dict) -> pd.DataFrame:
    """One row per pruning setting: removed coordinates, Spearman, binned |ΔE| with its CI and paired change, |Δ|m||."""
    return pd.DataFrame([{"setting": name, "removed dims": 0 if r["mask"] is None else int(r["mask"].removed_count),
                          "removed": 0.0 if r["mask"] is None else r["mask"].removed_fraction,
                          "Spearman(T, E)": r["spearman"], "binned |ΔE|": r["dE"], "CI low": r["dE_low"],
                          "CI high": r["dE_high"], "paired Δ low": r["delta_low"], "paired Δ high": r["delta_high"],
                          "binned |Δ|m||": r["dm"]} for name, r in pruned.items()])


def measure(bundle: Bundle, parameters: dict, real: data.IsingData | None = None) -> dict:
    """The chapter's computation: :func:`measure_quality`, :func:`measure_statistics` and :func:`measure_pruning`.

    Args:
        bundle: a continuous-condition model (:func:`load_model`).
        parameters: the chapter's parameters (:data:`PARAMETERS`).
        real: the real configurations; by default the ``mdsdata`` Ising set of the model's lattice size.

    Returns:
        The three functions' results in one dict, with the model's ``name``, ``hidden`` size, ``n_blocks``, the
        ``parameters`` and ``text_row`` (None until :func:`measure_text` fills it).
    """
    p = parameters
    check_pruning_parameters(p["tail_fractions"], p["last_k"], p["head_ks"], p["num_steps"])
    real = data.load_ising(bundle.transformer.config.sample_size) if real is None else real
    results = {"name": bundle.name, "hidden": int(bundle.hidden_size),
               "n_blocks": int(bundle.transformer.config.num_layers), "parameters": dict(p), "text_row": None}
    results |= measure_quality(bundle, real, n_samples=p["n_samples"], n_bins=p["n_bins"], num_steps=p["num_steps"],
                               cfg_scale=p["cfg_scale"], n_bootstrap=p["n_bootstrap"], seed=p["seed"])
    results |= measure_statistics(bundle, n_grid=p["n_grid"], num_steps=p["num_steps"])
    results |= measure_pruning(bundle, results, tail_fractions=p["tail_fractions"], last_k=p["last_k"],
                               head_ks=p["head_ks"], num_steps=p["num_steps"], cfg_scale=p["cfg_scale"],
                               n_bootstrap=p["n_bootstrap"], seed=p["seed"])
    return results


def read_prompts(path: str) -> list[str]:
    """The prompts of a text file, one per non-empty line, or one line naming the file and the fix.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is unreadable (a folder, not UTF-8 text) or holds no prompt.
    """
    fix = "pass text_prompts_file, a UTF-8 text file with one prompt per line"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"the prompts file {path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"the prompts file {path} cannot be read ({type(error).__name__}); {fix}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"the prompts file {path} holds no prompt; {fix}")
    return prompts


def measure_text(text_model: str | None, text_prompts_file: str | None, text_device: str) -> dict | None:
    """Table 5's columns for a text-conditioned SD3 model over the prompts of a file (needs its weights and a GPU).

    Prints that nothing is measured when ``text_model`` is None; otherwise shows the paper's SD3 row beside ours.

    Returns:
        :func:`text_conditions.prompt_summary` of the pooled prompt embeddings, or None when ``text_model`` is None.

    Raises:
        FileNotFoundError: the prompts file is missing.
        ValueError: a text model without a prompts file, or one that is unreadable or holds no prompt.
    """
    if text_model is None:
        print("text_model is None: SD3 is not measured in this run (it needs the gated weights and a GPU)")
        return None
    if text_prompts_file is None:
        raise ValueError("text_model needs text_prompts_file: a text file with one prompt per line")
    prompts = read_prompts(text_prompts_file)
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(text_model, text_encoder_3=None, tokenizer_3=None,
                                                    torch_dtype=torch.float16).to(text_device)

    def encoder(batch: list[str]) -> torch.Tensor:
        return pipe.encode_prompt(batch, None, None, device=pipe.device, do_classifier_free_guidance=False)[2]

    pooled = torch.cat([text_conditions.encode_prompts(prompts[i : i + PROMPT_BATCH], encoder)
                        for i in tqdm(range(0, len(prompts), PROMPT_BATCH), desc="encoding prompts")])
    text_row = text_conditions.prompt_summary(pipe.transformer, pooled)
    ours_row = {column: text_row[key] for column, key in paper.TABLE_COLUMNS.items()}
    display(pd.DataFrame({"paper: SD3 2B": paper.TABLE5["SD3 2B"], f"ours: {text_model}": ours_row}).style.format(
        "{:.4f}").set_caption(f"Table 5 columns at t₀ = 1000 over {len(prompts)} prompts"))
    return text_row


# ---------------------------------------------------------------------------------------------------
#                                           Glued values
# ---------------------------------------------------------------------------------------------------


def paper_values() -> dict:
    """The paper's numbers and the organism's fixed settings the page quotes, by glue name."""
    continuous_rows = [v for k, v in paper.TABLE5.items() if k[:1] in "XM"]  # X-MDPT and MDSGen
    bars = paper.BARS
    return {"paper_cos_low": min(v["cosine_yt"] for v in continuous_rows),
            "paper_cos_high": max(v["cosine_yt"] for v in continuous_rows),
            "paper_y_low": min(v["cosine_y"] for v in continuous_rows),
            "paper_y_high": max(v["cosine_y"] for v in continuous_rows),
            "paper_fid_base": paper.TABLE7["baseline"]["FID"],
            "paper_fid_pruned": paper.TABLE7[paper.TABLE7_PRUNED]["FID"],
            "paper_share": paper.TABLE7_SHARE, "paper_tau_xmdpt": paper.TABLE7_TAU,
            "paper_tau_repa": paper.TABLE2[1]["tau"], "sinusoid_scale": SINUSOID_SCALE,
            "condition_dropout": integrity.read_json(embedded_dir("ising-dit") / "meta.json", "the organism's meta",
                                                     integrity.shipped_fix("ising-dit"))["recipe"]["label_dropout"],
            "spin_up": ising.SPIN_UP, "bar_spearman": bars["organism_spearman"], "bar_dE": bars["organism_dE"]}


def key_settings(results: dict) -> dict:
    """The pruning results the prose and the verdict quote: ``tail`` (the reference tail mask at every step),
    ``random`` (a random mask of its size), ``head`` (the smallest head mask) and ``largest`` (the largest tail)."""
    pruned = results["pruned"]
    return {"tail": pruned[results["tail_setting"]], "random": pruned[results["random_setting"]],
            "head": pruned[head_setting(min(results["head_ks"]))], "largest": pruned[results["largest_setting"]]}


def head_onset(results: dict) -> str:
    """The smallest head mask whose |ΔE| CI lies above the baseline's, as a share of D; or that none does."""
    baseline, head_ks = results["baseline"], results["head_ks"]
    harmful = [k for k in sorted(head_ks) if results["pruned"][head_setting(k)]["dE_low"] > baseline["dE_high"]]
    return (f"harm from top-{harmful[0]} ({harmful[0] / results['hidden']:.1%} of D)" if harmful
            else f"no harm up to top-{max(head_ks)}")


SAMPLED_GLUES = frozenset({
    "spearman", "dE", "dE_low", "dE_high", "dm", "forty_dE", "forty_low", "forty_high", "head_dE", "head_spearman",
    "largest_dE", "largest_spearman", "random_dE", "random_low", "random_high", "forty_delta_low", "forty_delta_high",
    "random_delta_low", "random_delta_high", "head_delta_low", "head_delta_high"})
"""The names of :func:`glued` computed from samples (the baseline's and the masks' runs; the notebook glues them with
``report.glue_sampled``); the others come from c, the real data and the paper."""


def sampler_card(bundle: Bundle, parameters: dict) -> dict:
    """The sampler card (:func:`sampling.sampler_card`) of every sampling run of :func:`measure`: the bundle's own
    precision, ``n_samples`` temperatures, no feature network (the Ising energies score the samples)."""
    return sampling.sampler_card(bundle, num_samples=parameters["n_samples"], num_steps=parameters["num_steps"],
                                 cfg_scale=parameters["cfg_scale"])


def glued(results: dict) -> dict:
    """Every value the page glues (besides the verdict's), by glue name, from :func:`measure`'s results."""
    real, baseline, ours, key = results["real"], results["baseline"], results["ours"], key_settings(results)
    values = paper_values() | {"n_blocks": results["n_blocks"], "hidden": results["hidden"],
                               "n_grid": results["parameters"]["n_grid"]}
    values |= {name: baseline[name] for name in ("spearman", "dE", "dE_low", "dE_high", "dm")}
    values |= {"real_spearman": ising.temperature_spearman(real.temperature, results["real_energy"]),
               "t_low": results["low"], "t_high": results["high"], "n_real": len(real.spins),
               "lattice": "×".join(str(n) for n in real.spins.shape[1:]), "t_critical": data.ISING_CRITICAL_T}
    values |= {name: ours[name] for name in ("cos_c", "cos_c_min", "cos_y", "npr_c", "npr_y", "t_share")}
    values |= {"t0": results["t0"], "tighter_bar": TIGHTER_BAR, "schedule_bar": paper.BARS["schedule_cosine"],
               "above_999": 100 * results["above_999"], "above_99": 100 * results["above_99"],
               "cos_min_t": results["sweep"]["cosine"].min().item()}
    values |= {"max_c": results["c_mean"].abs().max().item(),
               "s_tail_01": 100 * stats.tail_fraction(results["c_mean"], paper.TABLE7_TAU).item(),
               "s_tail_001": 100 * stats.tail_fraction(results["c_mean"], paper.TABLE2[1]["tau"]).item()}
    values |= {"forty_removed": 100 * results["reference_removed"], "forty_dE": key["tail"]["dE"],
               "forty_low": key["tail"]["dE_low"], "forty_high": key["tail"]["dE_high"],
               "head_dE": key["head"]["dE"], "head_spearman": key["head"]["spearman"],
               "largest_removed": 100 * results["largest_removed"], "largest_dE": key["largest"]["dE"],
               "largest_spearman": key["largest"]["spearman"], "random_dE": key["random"]["dE"],
               "random_low": key["random"]["dE_low"], "random_high": key["random"]["dE_high"]}
    for name, result in (("forty", key["tail"]), ("random", key["random"]), ("head", key["head"])):
        values[f"{name}_delta_low"], values[f"{name}_delta_high"] = result["delta_low"], result["delta_high"]
    return values


# ---------------------------------------------------------------------------------------------------
#                                          Figures and tables
# ---------------------------------------------------------------------------------------------------


def samples_figure(results: dict) -> plt.Figure:
    """Real configurations (top) and baseline samples (bottom) nearest to each temperature bin's centre."""
    edges, real, requested, n_bins = results["edges"], results["real"], results["requested"], len(results["edges"]) - 1
    centers = (edges[:-1] + edges[1:]) / 2
    fig, axes = plt.subplots(2, n_bins, figsize=(1.3 * n_bins, 3.0))
    for column, center in enumerate(centers):
        real_index = np.abs(real.temperature - center).argmin()
        sample_index = (requested - center).abs().argmin().item()
        axes[0, column].imshow(real.spins[real_index], cmap="gray", vmin=-1, vmax=1)
        axes[1, column].imshow(ising.binarize(results["baseline_images"][sample_index : sample_index + 1])[0],
                               cmap="gray", vmin=-1, vmax=1)
        axes[0, column].set_title(f"T={center:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    axes[0, 0].set_ylabel("real", fontsize=9)
    axes[1, 0].set_ylabel(results["name"], fontsize=9)
    fig.suptitle(f"Real configurations (top) and {results['name']} samples (bottom), nearest to each bin centre")
    fig.tight_layout()
    return fig


def quality_figure(results: dict) -> plt.Figure:
    """Energy per spin and |m| of the baseline samples against the real data, with both bin means."""
    quality, real, p = results["baseline"]["quality"], results["real"], results["parameters"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, real_values, sample_values, comparison, label in (
            (axes[0], results["real_energy"], quality.sample_energy, quality.energy, "energy per spin E/N"),
            (axes[1], results["real_m"], quality.sample_magnetization, quality.magnetization, "|m|")):
        ax.scatter(real.temperature, real_values, s=2, color="0.75", label="real configurations")
        ax.scatter(results["requested"], sample_values, s=4, color="C3", alpha=0.6, label=f"{results['name']} samples")
        ax.plot(comparison.centers, comparison.real_mean, "o-", color="0.3", label="real, bin mean")
        ax.plot(comparison.centers, comparison.sample_mean, "s--", color="C3", label="samples, bin mean")
        ax.axvline(data.ISING_CRITICAL_T, color="0.5", linestyle=":", linewidth=1)
        ax.set(xlabel="temperature T (requested, for samples)", ylabel=label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['name']}: samples against real data (dotted: Onsager's T_c); CFG {p['cfg_scale']:g}, "
                 f"{p['num_steps']} steps")
    fig.tight_layout()
    return fig


def quality_table(results: dict):
    """The binned comparison of the baseline samples with the real data (a Styler)."""
    quality = results["baseline"]["quality"]
    return pd.DataFrame({"T bin centre": quality.energy.centers, "real E/N": quality.energy.real_mean,
                         "sample E/N": quality.energy.sample_mean, "|ΔE|": quality.energy.abs_error,
                         "real |m|": quality.magnetization.real_mean,
                         "sample |m|": quality.magnetization.sample_mean, "samples": quality.energy.sample_count,
                         "real": quality.energy.real_count}).style.format(precision=3).hide(axis="index").set_caption(
        f"{results['name']}: binned comparison with the real data")


def statistics_table(results: dict):
    """:func:`report.summary_table` of ``c`` and ``y`` at t₀ over the temperature grid (a Styler)."""
    return report.summary_table(results["ours"]).style.format("{:.4f}").set_caption(
        f"{results['name']}: statistics at t₀ = {results['t0']:g} over {results['parameters']['n_grid']} temperatures "
        f"in [{results['low']:g}, {results['high']:g}]")


def table5(results: dict) -> pd.DataFrame:
    """Table 5 of the paper with our model's row appended, indexed by model."""
    ours = results["ours"]
    rows = [{"model": name, "condition": "continuous" if name.startswith(("X-MDPT", "MDSGen")) else "text / audio",
             "cosine (y+t)": v["cosine_yt"], "nPR (y+t)": v["nPR_yt"], "cosine (y)": v["cosine_y"],
             "nPR (y)": v["nPR_y"], "source": "paper, Table 5"} for name, v in paper.TABLE5.items()]
    rows.append({"model": results["name"], "condition": "continuous (T)", "cosine (y+t)": ours["cos_c"],
                 "nPR (y+t)": ours["npr_c"], "cosine (y)": ours["cos_y"], "nPR (y)": ours["npr_y"],
                 "source": "ours (this notebook)"})
    return pd.DataFrame(rows).set_index("model")


def table5_view(results: dict):
    """:func:`table5`, formatted (a Styler)."""
    return table5(results).style.format({"cosine (y+t)": "{:.5f}", "cosine (y)": "{:.4f}", "nPR (y+t)": "{:.2%}",
                                         "nPR (y)": "{:.2%}"}).set_caption("Table 5 of the paper beside ours")


def table1_view(results: dict):
    """Table 1's continuous-condition columns (X-MDPT, MDSGen) with our model's row (a Styler)."""
    ours = results["ours"]
    table1 = pd.DataFrame({name: paper.TABLE1[name] for name in ("X-MDPT", "MDSGen")}).T
    table1["source"] = "paper, Table 1"
    table1.loc[results["name"]] = {"D": results["hidden"], "PR": ours["pr_c"], "nPR": ours["npr_c"],
                                   "cosine": ours["cos_c"], "source": "ours (this notebook)"}
    table1 = table1.astype({"D": int})
    return table1.style.format({"PR": "{:.2f}", "nPR": "{:.2%}", "cosine": "{:.4f}"}).set_caption(
        "Table 1 (continuous-condition columns) beside ours: c = y + t")


def table5_figure(results: dict) -> plt.Figure:
    """:func:`plots.beside_paper` of :func:`table5`: ours red, continuous models dark grey, the others light grey."""
    comparison = table5(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    palette = ["C3" if s.startswith("ours") else ("0.45" if k == "continuous" else "0.75")
               for s, k in zip(comparison["source"], comparison["condition"])]
    plots.beside_paper(axes, comparison, palette, 0.97)
    fig.suptitle(f"Table 5 analogue: continuous-condition models (dark grey), others (light grey), {results['name']} "
                 "(red)")
    fig.tight_layout()
    return fig


def cosine_matrix_figure(results: dict) -> plt.Figure:
    """The temperature × temperature cosine matrices of ``c`` and of ``e(T)`` alone at t₀."""
    grid, n_grid = results["grid"], results["parameters"]["n_grid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ticks = np.linspace(0, n_grid - 1, 6).round().astype(int)
    for ax, vectors, title in ((axes[0], results["c"], "c = e(T) + t₀"), (axes[1], results["y"], "e(T) alone")):
        matrix = plots.cosine_heatmap(ax, vectors, title)  # (n_grid, n_grid)
        ax.set_xticks(ticks + 0.5, [f"{grid[i]:.1f}" for i in ticks])
        ax.set_yticks(ticks + 0.5, [f"{grid[i]:.1f}" for i in ticks])
        ax.set(title=f"{title}: min {matrix.min():.4f}", xlabel="T", ylabel="T")
    fig.suptitle(f"{results['name']}: pairwise cosine over temperature pairs at t₀ = {results['t0']:g} (Fig. 3 "
                 "analogue)")
    fig.tight_layout()
    return fig


def schedule_figure(results: dict) -> plt.Figure:
    """:func:`plots.schedule_sweep` of the statistics of ``c`` over the schedule."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plots.schedule_sweep(axes, results["sweep"], results["t0"], results["time_kind"], y_cosine=results["ours"]["cos_y"])
    fig.suptitle(f"{results['name']}: c over the schedule, over {results['parameters']['n_grid']} temperatures")
    fig.tight_layout()
    return fig


def head_tail_figure(results: dict) -> plt.Figure:
    """Magnitudes of ``c``, its mean vector, and the share below τ (the paper's τ on REPA and X-MDPT marked)."""
    c, c_mean = results["c"], results["c_mean"]
    magnitude = c_mean.abs()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    plots.magnitude_histogram(axes[0], c, bins=30)
    plots.mean_vector(axes[1], c)
    plots.tau_curves(axes[2], stats.tau_sweep(c_mean, np.logspace(-4, np.log10(2 * magnitude.max().item()), 200)),
                     marks=(paper.TABLE2[1]["tau"], paper.TABLE7_TAU))  # the paper's τ on REPA and X-MDPT's
    fig.suptitle(f"{results['name']}: c = e(T) + t at t₀ = {results['t0']:g}, mean over "
                 f"{results['parameters']['n_grid']} temperatures")
    fig.tight_layout()
    return fig


def pruning_view(results: dict):
    """The pruning table, formatted (a Styler)."""
    p = results["parameters"]
    return results["pruning"].style.format(
        {"removed": "{:.1%}", "Spearman(T, E)": "{:.3f}", "binned |ΔE|": "{:.3f}", "CI low": "{:.3f}",
         "CI high": "{:.3f}", "paired Δ low": "{:+.3f}", "paired Δ high": "{:+.3f}",
         "binned |Δ|m||": "{:.3f}"}).hide(axis="index").set_caption(
        f"{results['name']}: pruning c, {p['n_samples']} samples per setting, CFG {p['cfg_scale']:g}, "
        f"{p['num_steps']} steps")


def pruning_figure(results: dict) -> plt.Figure:
    """Each setting's binned |ΔE| with its 95% CI (log scale) against the baseline's interval (grey)."""
    pruning, baseline = results["pruning"], results["baseline"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(pruning) + 1))
    positions = np.arange(len(pruning))[::-1]
    errors = np.stack([pruning["binned |ΔE|"] - pruning["CI low"], pruning["CI high"] - pruning["binned |ΔE|"]])
    ax.errorbar(pruning["binned |ΔE|"], positions, xerr=errors, fmt="o", color="C3", capsize=3)
    ax.axvspan(baseline["dE_low"], baseline["dE_high"], color="0.85", label="baseline 95% CI")
    ax.set_yticks(positions, pruning["setting"])
    ax.set(xscale="log", xlabel="binned |ΔE| against real data (lower is better)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{results['name']}: sample energy error under pruning of c (95% bootstrap CIs)")
    fig.tight_layout()
    return fig


def table7_view():
    """Table 7 (X-MDPT, DeepFashion) as printed, with the relative change of FID (a Styler)."""
    table7 = pd.DataFrame(paper.TABLE7).T
    table7["relative change of FID"] = table7["FID"] / table7.loc["baseline", "FID"] - 1
    return table7.style.format(precision=4).set_caption("Table 7 (X-MDPT, DeepFashion), as printed")


# ---------------------------------------------------------------------------------------------------
#                                               Verdict
# ---------------------------------------------------------------------------------------------------


def preconditions(results: dict) -> dict:
    """The precondition rows: the organism follows T (``follows_t``: rank correlation; ``accurate``: energy
    error), the pruning test can see harm (``separable``) and ``c`` is sparse (``sparse``)."""
    bars, baseline, ours, random_result = paper.BARS, results["baseline"], results["ours"], key_settings(results)[
        "random"]
    return {
        "follows_t": report.precondition_row(
            "the organism follows T: rank correlation", paper="— (the organism's own bar)",
            ours=f"Spearman {baseline['spearman']:.3f}", value=baseline["spearman"], op=">=",
            bar=bars["organism_spearman"]),
        "accurate": report.precondition_row(
            "the organism follows T: energy error", paper="— (the organism's own bar)",
            ours=f"|ΔE| {baseline['dE']:.3f}", value=baseline["dE"], op="<=", bar=bars["organism_dE"]),
        "separable": report.precondition_row(
            "the pruning test can see harm: the random control of the tail's size is harmful (paired Δ|ΔE| > 0)",
            paper="no random control", ours=f"[{random_result['delta_low']:+.3f}, {random_result['delta_high']:+.3f}]",
            value=random_result["delta_low"], op=">", bar=0.0),
        "sparse": report.precondition_row(
            "c is sparse, as REPA's (the head claim's regime)", paper=f"nPR ≤ {bars['sparse_npr']:.2%}",
            ours=f"{ours['npr_c']:.2%}", value=ours["npr_c"], op="<=", bar=bars["sparse_npr"]),
    }


def claims(results: dict) -> list[dict]:
    """The verdict's rows, in the page's order, from :func:`measure`'s results (with ``text_row`` filled).

    Reads ``baseline`` (spearman, dE), ``ours`` (cos_c, cos_y, npr_c), ``above_99``, ``reference_removed``,
    ``pruned`` with the setting names of :func:`key_settings`, ``head_ks``, ``hidden`` and ``text_row``.
    """
    bars, baseline, ours, above_99 = paper.BARS, results["baseline"], results["ours"], results["above_99"]
    pre, key, text_row = preconditions(results), key_settings(results), results["text_row"]
    forty, head_result = key["tail"], key["head"]
    organism = [pre["follows_t"], pre["accurate"]]
    npr_low, npr_high = bars["continuous_npr_range"]
    return [
        pre["follows_t"], pre["accurate"],
        report.claim_row("continuous conditions: c = y + t is almost one direction (Table 5)",
                         paper=f"≥ {bars['continuous_cosine']:.4f} (lowest: SD3 2B)", ours=f"{ours['cos_c']:.5f}",
                         value=ours["cos_c"], op=">=", bar=bars["continuous_cosine"], requires=organism),
        report.claim_row("continuous conditions: y alone is already highly aligned (Table 5)",
                         paper=f"≥ {bars['continuous_y_cosine']:.4f}", ours=f"{ours['cos_y']:.4f}",
                         value=ours["cos_y"], op=">=", bar=bars["continuous_y_cosine"], requires=organism),
        report.claim_row("the nPR of c is moderate for continuous conditions (Table 5)",
                         paper=f"{npr_low:.2%}–{npr_high:.2%}", ours=f"{ours['npr_c']:.2%}", value=ours["npr_c"],
                         op="in", bar=bars["continuous_npr_range"], requires=organism),
        report.claim_row(f"the cosine stays > {bars['schedule_cosine']} at nearly all timesteps (§4)",
                         paper=f"≥ {bars['nearly_all']:.0%} of timesteps (reading)", ours=f"{above_99:.1%}",
                         value=above_99, op=">=", bar=bars["nearly_all"], requires=organism),
        pre["separable"],
        report.claim_row(f"pruning the tail ({results['reference_removed']:.0%} of c) keeps quality (Table 7)",
                         paper=f"FID {paper.TABLE7['baseline']['FID']} → {paper.TABLE7[paper.TABLE7_PRUNED]['FID']}",
                         ours=f"paired Δ|ΔE| [{forty['delta_low']:+.3f}, {forty['delta_high']:+.3f}]",
                         value=forty["delta_low"], op="<=", bar=0.0, requires=organism + [pre["separable"]]),
        pre["sparse"],
        report.claim_row(f"zeroing a few head coordinates destroys generation (top-{min(results['head_ks'])})",
                         paper=f"|ΔE| ×≥ {bars['destroyed_ratio']:.1f} (Table 2's broken FID ratio)",
                         ours=f"|ΔE| ×{head_result['dE'] / baseline['dE']:.2f}; " + head_onset(results),
                         value=head_result["dE"] / baseline["dE"], op=">=", bar=bars["destroyed_ratio"],
                         requires=organism + [pre["sparse"]]),
        report.claim_row("SD3 (Table 5): the cosine of c", paper=f"{paper.TABLE5['SD3 2B']['cosine_yt']:.4f} (2B)",
                         ours="not run (no SD3 weights / GPU)" if text_row is None else f"{text_row['cos_c']:.4f}",
                         value=None if text_row is None else text_row["cos_c"], op=">=",
                         bar=bars["continuous_cosine"]),
    ]

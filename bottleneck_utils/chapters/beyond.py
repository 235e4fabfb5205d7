"""The "Beyond the paper" chapter's measurements: bottleneck-trained variants against their control, the pruning
protocol (:mod:`chapters.pruning`) on a DiT and a class-conditioned U-Net, and why the U-Net's class table barely
trained. Reads shipped organisms; no training happens here.

Quality is MNIST-FID and class accuracy (:func:`quality.evaluator_for`) of class-balanced CFG samples. Every
model is sampled from the same noise and labels, so a change against the control is a paired bootstrap interval
(:func:`metrics.bootstrap_table`).

**The floor, paired as the claims are.** The control is also drawn at each of ``noise_seeds`` (at least 5) with the
same labels, and each draw enters the same bootstrap as the variants: draw i of the control at a noise seed is paired
with draw i of the control at ``seed``, resampled on the same indices. That gives one paired 95% interval of the
control against itself per noise seed and metric (:func:`floor_table`). A metric's band is ±(the largest |end| of
those intervals) (:func:`equivalence_bands`): the farthest a paired interval reached when nothing but the noise
changed.

**"Keeps quality" is an equivalence test** (:func:`kept_rows`): a variant keeps quality when its paired 95% interval
against the control lies inside the band for FID AND for accuracy. Its test value is the reach, the largest |end| of
its two intervals as a share of its metric's band (:func:`equivalence_reach`), against 1; a variant whose interval
leaves either band, on either side, is "not reproduced" (a large gain is a change of quality, not a kept one).
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import torch
import torch.nn.functional as F

from bottleneck_utils import adaln_code, adaln_cost, integrity, metrics, stats
from bottleneck_utils.chapters import pruning, regime, report
from bottleneck_utils.embeddings import first_time_summary
from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import classifier, data, quality, recipes, train
from bottleneck_utils.sampling import balanced_labels, sample

CONTROL = "beyond/full"
PARAMETERS = {"device": str, "seed": int, "n_samples": int, "num_steps": int, "cfg_scale": float, "noise_seeds": list,
              "n_boot": int, "tail_share": float, "head_k": int, "dit": str, "unet": str}
"""The beyond chapter's parameters: name → accepted type(s) (:func:`report.notebook_parameters`)."""


def shipped_variants() -> list[str]:
    """The :data:`recipes.VARIANTS` shipped in the package data, in their registry order."""
    return [name for name in recipes.VARIANTS if name in integrity.manifest()]


def _sample_set(bundle: Bundle, evaluator, labels, num_steps: int, cfg_scale: float, seed: int, mask=None,
                schedule="every"):
    images = sample(bundle, labels, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, mask=mask,
                    schedule=schedule, progress=False)
    return evaluator.sample_set(images, labels)


# ---------------------------------------------------------------------------------------------------
#                                  Bottleneck-trained variants vs their control
# ---------------------------------------------------------------------------------------------------


QUALITY_METRICS = ("FID", "accuracy")
"""The metrics a variant must keep (:func:`kept_rows`): both, each within its band."""
MIN_FLOOR_DRAWS = 5
"""The fewest control draws at other noise seeds that the floor is built from."""


def floor_setting(noise_seed: int) -> str:
    """The bootstrap table's name of the control drawn at ``noise_seed``."""
    return f"{CONTROL} @ noise seed {noise_seed}"


def variant_quality(names: list[str], n_samples: int, num_steps: int, cfg_scale: float, seed: int,
                    noise_seeds: list[int], n_boot: int, device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Samples every variant at ``seed`` and the control at ``seed`` and at each of ``noise_seeds``, all for the same
    labels, and returns :func:`quality_tables` of them."""
    unknown = sorted(set(names) - set(recipes.VARIANTS))
    if unknown:
        raise ValueError(f"{unknown} are not beyond variants; choose from {list(recipes.VARIANTS)}")
    if CONTROL not in names:
        raise ValueError(f"the control {CONTROL} is not shipped: train it with python -m bottleneck_utils.organisms.cli beyond train {CONTROL}")
    _check_noise_seeds(seed, noise_seeds)
    bundles = {name: load(name, device=device) for name in names}
    evaluator = quality.evaluator_for(bundles[CONTROL], n_kid=n_samples, seed=seed, device=device)
    labels = balanced_labels(bundles[CONTROL].num_classes, n_samples)
    sets = {name: _sample_set(bundle, evaluator, labels, num_steps, cfg_scale, seed) for name, bundle in bundles.items()}
    draws = {noise_seed: _sample_set(bundles[CONTROL], evaluator, labels, num_steps, cfg_scale, noise_seed)
             for noise_seed in noise_seeds}
    widths = {name: adaln_code.code_width(bundle.transformer) for name, bundle in bundles.items()}
    return quality_tables(sets, draws, evaluator.reference, widths, n_boot, seed)


def _check_noise_seeds(seed: int, noise_seeds: list[int]) -> None:
    if len(set(noise_seeds)) < MIN_FLOOR_DRAWS or seed in noise_seeds or len(set(noise_seeds)) != len(noise_seeds):
        raise ValueError(f"noise_seeds needs at least {MIN_FLOOR_DRAWS} distinct seeds other than seed={seed}, "
                         f"got {list(noise_seeds)}")


def quality_tables(sets: dict, draws: dict, reference: metrics.Reference, widths: dict, n_boot: int,
                   seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The variants' quality and the control's floor, from one paired bootstrap.

    Args:
        sets: variant name → :class:`metrics.SampleSet` at ``seed``, the control (:data:`CONTROL`) among them.
        draws: noise seed → the control's SampleSet at that seed, for the same labels (at least
            :data:`MIN_FLOOR_DRAWS`).
        reference: the real side.
        widths: variant name → its adaLN code width (None: no code).
        n_boot, seed: the bootstrap's rounds and seed.

    Returns:
        ``quality``: per variant (in ``sets``' order) its code width, L1 λ and :func:`pruning.change_columns` of FID
        and accuracy against the control; ``floor``: :func:`floor_table`.
    """
    _check_noise_seeds(seed, list(draws))
    table = metrics.bootstrap_table(sets | {floor_setting(s): draw for s, draw in draws.items()}, reference, CONTROL,
                                    n_boot=n_boot, seed=seed, progress=False)
    rows = [{"variant": name, "code width": widths[name], "L1 λ": recipes.VARIANTS[name].l1_c,
             **_changes(table, name)} for name in sets]
    quality_table = pd.DataFrame(rows).set_index("variant").astype({"code width": float})  # NaN: no code
    return quality_table, floor_table(table, list(draws))


def _changes(table: pd.DataFrame, setting: str) -> dict:
    return {key: value for metric in QUALITY_METRICS for key, value in pruning.change_columns(table, setting, metric).items()}


def floor_table(table: pd.DataFrame, noise_seeds: list[int]) -> pd.DataFrame:
    """The control against itself: for each noise seed, the control's value at that seed and its paired change
    [95% interval] against the control at the bootstrap's ``seed`` (:func:`pruning.change_columns`), per metric of
    :data:`QUALITY_METRICS`; rows indexed by noise seed."""
    rows = [{"noise seed": s, **_changes(table, floor_setting(s))} for s in noise_seeds]
    return pd.DataFrame(rows).set_index("noise seed")


def equivalence_bands(floor: pd.DataFrame) -> dict[str, float]:
    """Each metric's band: the largest |end| of the control-against-itself paired 95% intervals of ``floor``
    (:func:`floor_table`). A variant keeps a metric when its own interval lies within ± this."""
    return {metric: float(floor[[f"Δ{metric} low", f"Δ{metric} high"]].abs().to_numpy().max())
            for metric in QUALITY_METRICS}


def half_width(table: pd.DataFrame, metric: str) -> float:
    """The median half-width of the paired 95% intervals of ``metric`` in a :func:`quality_tables` table."""
    return float((table[f"Δ{metric} high"] - table[f"Δ{metric} low"]).median() / 2)


def equivalence_reach(row: pd.Series, bands: dict[str, float]) -> float:
    """The largest |end| of a variant's paired intervals, each as a share of its metric's band, over
    :data:`QUALITY_METRICS`: at most 1 when every interval lies within its band. NaN when a band is not positive
    and finite (the control's draws never differed: no floor to test against) or an interval end is NaN."""
    shares = []
    for metric in QUALITY_METRICS:
        band = bands[metric]
        reach = max(abs(row[f"Δ{metric} low"]), abs(row[f"Δ{metric} high"]))
        shares.append(reach / band if band > 0 and math.isfinite(band) and math.isfinite(reach) else math.nan)
    return math.nan if any(math.isnan(share) for share in shares) else max(shares)


def variant_statistics(names: list[str]) -> pd.DataFrame:
    """The final EMA statistics of c (:func:`regime.rung_table`) of each variant, with its adaLN cost: the share
    of the plain adaLN's multiply-accumulates it needs, and the share of the whole forward pass that saves."""
    unknown = sorted(set(names) - set(shipped_variants()))
    if unknown:
        raise ValueError(f"{unknown} are not shipped beyond variants; choose from {shipped_variants()} "
                         "(train more with make train-beyond)")
    table = regime.rung_table(names)
    config = recipes.VARIANT_BASE.transformer
    hidden, depth = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
    tokens = (config["sample_size"] // config["patch_size"]) ** 2
    plain = adaln_code.adaln_macs(hidden, depth)
    table["adaLN MACs share"] = [adaln_code.adaln_macs(hidden, depth, recipes.VARIANTS[n].code_width) / plain
                                 for n in names]
    table["forward saved"] = adaln_cost.adaln_flop_share(hidden, tokens, depth) * (1 - table["adaLN MACs share"])
    return table


def kept_rows(quality: pd.DataFrame, bands: dict[str, float]) -> list[dict]:
    """One claim row per variant but the control, in ``quality``'s order: quality is kept when the variant's paired
    95% intervals of ΔFID and Δaccuracy against the control both lie within ± their metric's band
    (:func:`equivalence_bands`); the test is :func:`equivalence_reach` ≤ 1."""
    rows = []
    for name, row in quality.drop(CONTROL).iterrows():
        constraint = (f"a {int(row['code width'])}-dim code" if pd.notna(row["code width"])
                      else f"L1 λ = {row['L1 λ']:g} on c")
        accuracy = [100 * row[key] for key in ("Δaccuracy", "Δaccuracy low", "Δaccuracy high")]
        silent = [metric for metric in QUALITY_METRICS if not bands[metric] > 0]
        rows.append(report.claim_row(
            f"{constraint} keeps quality ({name})", paper="proposed as future work, untested",
            ours=(f"ΔFID {pruning.interval_text(row['ΔFID'], row['ΔFID low'], row['ΔFID high'])} in ±{bands['FID']:.2f}; "
                  f"Δaccuracy {pruning.interval_text(*accuracy, 1)} points in ±{100 * bands['accuracy']:.1f}"
                  + (f" (no {' or '.join(silent)} band: the control's own draws never differed)" if silent else "")),
            value=equivalence_reach(row, bands), op="<=", bar=1.0))
    return rows


def organism_statistics(bundles: dict[str, Bundle]) -> pd.DataFrame:
    """:func:`embeddings.first_time_summary` of each model (the training logs' statistics), with its shipped
    quality record's ``per_digit`` where it has one."""
    rows = {}
    for name, bundle in bundles.items():
        record = CHECKPOINT_DIR / name / "quality.json"
        per_digit = quality.read_record(record, name)["per_digit"] if record.is_file() else float("nan")
        rows[name] = first_time_summary(bundle) | {"per_digit": per_digit}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------------
#                                  Did the class table train? (its init, rebuilt)
# ---------------------------------------------------------------------------------------------------


TABLE_KEYS = ("class_embedder.embedding_table.weight", "class_embedding.weight")
"""How a class table's parameter name ends: a diffusers DiT's (each block's copy) and a ``UNet2DModel``'s."""


def shipped_run(name: str) -> tuple[recipes.Recipe, int]:
    """The recipe and seed in the shipped organism's ``meta.json``; fields it predates take their defaults (an older
    file lacks ``condition``, and ``class_table_std``: a U-Net trained from diffusers' N(0, 1) table)."""
    meta = integrity.read_json(CHECKPOINT_DIR / name / "meta.json", f"{name}'s meta", integrity.shipped_fix(name))
    try:
        values = meta["recipe"] | {"class_names": meta.get("class_names"), "condition": meta.get("condition")}
        return recipes.Recipe.from_dict(values, f"{name}'s meta.json"), meta["seed"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{name}'s meta.json is not a run's meta ({type(error).__name__}: {error}): "
                         f"{integrity.shipped_fix(name)}") from None


def initial_table(name: str) -> torch.Tensor:
    """The class table (rows × D, the null row last) that the shipped organism ``name`` started from, rebuilt from
    its ``meta.json`` recipe and seed: the trainer seeds the initialisation (:func:`train.build_model`), so the same
    recipe, seed and code give the same draw."""
    recipe, seed = shipped_run(name)
    model = train.build_model(recipe, seed)
    return train.conditioning_embedder(model).class_embedder.embedding_table.weight.detach().double()


def gaussian_table_statistics(n: int, d: int, draws: int = 2000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """cos(y) and nPR(y) (:func:`stats.mean_offdiag_cosine`, :func:`stats.mean_npr`) of ``draws`` tables of n iid
    N(0, I_d) rows: (mean, sd) of each, what an untrained Gaussian table of any scale reads."""
    y = torch.randn(draws, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cos, npr = stats.mean_offdiag_cosine(y), stats.mean_npr(y)
    return {"cos_y": (cos.mean().item(), cos.std().item()), "npr_y": (npr.mean().item(), npr.std().item())}


def _table_gradients(bundle: Bundle, name: str, batches: int, batch_size: int, seed: int) -> tuple[float, float]:
    """RMS per entry of the training loss's gradient over ``batches`` MNIST training batches (the trainer's draw,
    noise and loss, no label dropout): on the digit rows of the class table (a DiT's per-block copies summed: the one
    shared table it trained) and on every other parameter."""
    recipe, _ = shipped_run(name)
    images, labels = data.load_mnist("train")
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(bundle.transformer).train()
    tables, rest = [], []
    for _ in range(batches):
        batch = torch.randint(len(images), (batch_size,), generator=generator).numpy()
        x0, y = classifier.downsample(images[batch]) * 2 - 1, torch.as_tensor(labels[batch])  # (B, 1, 14, 14), (B,)
        x_t, t, target = train.noisy_batch(recipe, x0, generator)
        model.zero_grad()
        F.mse_loss(model(x_t, timestep=t, class_labels=y).sample, target).backward()
        grads = [(key.endswith(TABLE_KEYS), p.grad) for key, p in model.named_parameters() if p.grad is not None]
        tables.append(sum(g for table, g in grads if table)[: bundle.num_classes].flatten())
        rest.append(torch.cat([g.flatten() for table, g in grads if not table]))
    return _rms(tables), _rms(rest)


def _rms(parts: list[torch.Tensor]) -> float:
    return torch.cat(parts).double().pow(2).mean().sqrt().item()


def class_table_training(bundles: dict[str, Bundle], batches: int = 2, batch_size: int = 128,
                         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How far each organism's class table moved from the init it was trained from (:func:`initial_table`).

    Returns:
        ``summary``, per organism: the init's std, the trained table's RMS, the drift (trained − init) RMS per
        entry, the median of ‖row − init‖/‖init‖ over the digit rows, cos(trained, init) of the flattened table,
        cos(y) and nPR(y) of the trained and the initial digit rows beside their Gaussian mean ± sd
        (:func:`gaussian_table_statistics`), and the table's gradient RMS per entry over the rest's
        (:func:`_table_gradients`). ``rows``: ‖row − init‖/‖init‖ per digit row (columns: organisms).
    """
    summary, rows = {}, {}
    for name, bundle in bundles.items():
        n = bundle.num_classes
        trained = bundle.embedder.class_embedder.embedding_table.weight.detach().double()[:n]  # (n, D)
        init = initial_table(name)[:n]
        drift = trained - init
        relative = drift.norm(dim=1) / init.norm(dim=1)  # (n,)
        gauss = gaussian_table_statistics(n, trained.shape[1], seed=seed)
        table_grad, rest_grad = _table_gradients(bundle, name, batches, batch_size, seed)
        rows[name] = relative.numpy()
        summary[name] = {
            "init std": init.std().item(), "trained RMS": trained.pow(2).mean().sqrt().item(),
            "drift RMS": drift.pow(2).mean().sqrt().item(), "drift / init (median row)": relative.median().item(),
            "cos(trained, init)": F.cosine_similarity(trained.flatten(), init.flatten(), dim=0).item(),
            "cos_y": stats.mean_offdiag_cosine(trained).item(), "cos_y at init": stats.mean_offdiag_cosine(init).item(),
            "cos_y Gaussian": gauss["cos_y"][0], "cos_y Gaussian sd": gauss["cos_y"][1],
            "npr_y": stats.mean_npr(trained).item(), "npr_y at init": stats.mean_npr(init).item(),
            "npr_y Gaussian": gauss["npr_y"][0], "npr_y Gaussian sd": gauss["npr_y"][1],
            "table grad / rest": table_grad / rest_grad}
    return pd.DataFrame(summary).T, pd.DataFrame(rows, index=pd.RangeIndex(n, name="digit row"))


# ---------------------------------------------------------------------------------------------------
#                                               The verdict
# ---------------------------------------------------------------------------------------------------


def claims(quality: pd.DataFrame, quality_bands: dict[str, float], organism_stats: pd.DataFrame,
           pruned: dict[str, pd.DataFrame], bands: dict) -> tuple[list[dict], list[dict]]:
    """The chapter's verdict rows: :func:`kept_rows` of the variants within ``quality_bands``
    (:func:`equivalence_bands`), then for each organism of ``pruned`` (its :func:`pruning.organism_runs`) the regime's
    preconditions on its ``organism_stats`` row and the pruning claims (:func:`pruning.rung_claims`), each prefixed by
    the organism's name. Returns the kept rows and the organism rows."""
    kept = kept_rows(quality, quality_bands)
    organism_rows = []
    for name, results in pruned.items():
        requires = [row | {"claim": f"{name}: {row['claim']}"} for row in
                    regime.precondition_rows(organism_stats.loc[name], bands)]
        organism_rows += requires + [row | {"claim": f"{name}: {row['claim']}"}
                                     for row in pruning.rung_claims(results, requires)]
    return kept, organism_rows

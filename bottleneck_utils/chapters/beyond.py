"""The "Beyond the paper" chapter's measurements: bottleneck-trained variants against their control, and the same
pruning protocol on a DiT and a class-conditioned U-Net. Reads shipped organisms; no training happens here.

Quality is MNIST-FID and class accuracy (:func:`quality.evaluator_for`) of class-balanced CFG samples. Every
model is sampled from the same noise and labels, so a change against the control is a paired bootstrap interval
(:func:`metrics.bootstrap_table`); the noise floor is the spread (max − min) of the control's FID over
``noise_seeds`` unpaired reruns with other noise.
"""

from __future__ import annotations

import json

import pandas as pd

from bottleneck_utils import adaln_code, adaln_cost, integrity, metrics
from bottleneck_utils.chapters import regime, report
from bottleneck_utils.embeddings import first_time_summary
from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import beyond, quality
from bottleneck_utils.sampling import balanced_labels, sample

CONTROL = "beyond/full"
# the settings the U-Net comparison needs (tail at every step and at t₀, head top-k, the random control): the
# ladder's last-k tail and random head are left out to keep the chapter within the book's CPU budget
PRUNING_KEYS = ("unpruned", "tail-every", "tail-first", "random-tail", "head")


def shipped_variants() -> list[str]:
    """The :data:`beyond.VARIANTS` shipped in the package data, in their registry order."""
    return [name for name in beyond.VARIANTS if name in integrity.manifest()]


def _sample_set(bundle: Bundle, evaluator, labels, num_steps: int, cfg_scale: float, seed: int, mask=None,
                schedule="every"):
    images = sample(bundle, labels, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed, mask=mask,
                    schedule=schedule, progress=False)
    return evaluator.sample_set(images, labels)


def _change(table: pd.DataFrame, setting: str, metric: str) -> dict:
    row = table.loc[(setting, metric)]
    return {metric: row["value"], f"Δ{metric}": row["delta"], f"Δ{metric} low": row["delta_low"],
            f"Δ{metric} high": row["delta_high"]}


# ---------------------------------------------------------------------------------------------------
#                                  Bottleneck-trained variants vs their control
# ---------------------------------------------------------------------------------------------------


def variant_quality(names: list[str], n_samples: int, num_steps: int, cfg_scale: float, seed: int,
                    noise_seeds: list[int], n_boot: int, device: str = "cpu") -> tuple[pd.DataFrame, pd.Series]:
    """FID and accuracy of each variant with its paired change against :data:`CONTROL`, and the control's FID at
    ``seed`` and every noise seed (the noise floor is their max − min)."""
    unknown = sorted(set(names) - set(beyond.VARIANTS))
    if unknown:
        raise ValueError(f"{unknown} are not beyond variants; choose from {list(beyond.VARIANTS)}")
    if CONTROL not in names:
        raise ValueError(f"the control {CONTROL} is not shipped: train it with python -m bottleneck_utils.organisms.beyond train {CONTROL}")
    bundles = {name: load(name, device=device) for name in names}
    evaluator = quality.evaluator_for(bundles[CONTROL], n_kid=n_samples, seed=seed, device=device)
    labels = balanced_labels(bundles[CONTROL].num_classes, n_samples)
    sets = {name: _sample_set(bundle, evaluator, labels, num_steps, cfg_scale, seed) for name, bundle in bundles.items()}
    table = metrics.bootstrap_table(sets, evaluator.reference, CONTROL, n_boot=n_boot, seed=seed, progress=False)
    rows = [{"variant": name, "code width": adaln_code.code_width(bundles[name].transformer),
             "L1 λ": beyond.VARIANTS[name].get("l1_c", 0.0),
             **_change(table, name, "FID"), **_change(table, name, "accuracy")} for name in names]
    floor = {seed: table.loc[(CONTROL, "FID"), "value"]}
    for noise_seed in noise_seeds:
        control = _sample_set(bundles[CONTROL], evaluator, labels, num_steps, cfg_scale, noise_seed)
        floor[noise_seed] = metrics.metric_values(control, evaluator.reference)["FID"]
    table = pd.DataFrame(rows).set_index("variant").astype({"code width": float})  # NaN: no code
    return table, pd.Series(floor, name="control FID by noise seed")


def variant_statistics(names: list[str]) -> pd.DataFrame:
    """The final EMA statistics of c (:func:`regime.rung_table`) of each variant, with its adaLN cost: the share
    of the plain adaLN's multiply-accumulates it needs, and the share of the whole forward pass that saves."""
    unknown = sorted(set(names) - set(shipped_variants()))
    if unknown:
        raise ValueError(f"{unknown} are not shipped beyond variants; choose from {shipped_variants()} "
                         "(train more with make train-beyond)")
    table = regime.rung_table(names)
    config = beyond.BASE["transformer"]
    hidden, depth = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
    tokens = (config["sample_size"] // config["patch_size"]) ** 2
    plain = adaln_code.adaln_macs(hidden, depth)
    table["adaLN MACs share"] = [adaln_code.adaln_macs(hidden, depth, beyond.VARIANTS[n].get("code_width")) / plain
                                 for n in names]
    table["forward saved"] = adaln_cost.adaln_flop_share(hidden, tokens, depth) * (1 - table["adaLN MACs share"])
    return table


def kept_rows(quality: pd.DataFrame, floor: float) -> list[dict]:
    """One claim row per variant but the control, in ``quality``'s order: quality is kept when the top of the paired
    ΔFID interval against the control is within the noise floor."""
    rows = []
    for name, row in quality.drop(CONTROL).iterrows():
        constraint = (f"a {int(row['code width'])}-dim code" if pd.notna(row["code width"])
                      else f"L1 λ = {row['L1 λ']:g} on c")
        rows.append(report.claim_row(
            f"{constraint} keeps quality ({name})", paper="proposed as future work, untested",
            ours=f"ΔFID {row['ΔFID']:+.2f} [{row['ΔFID low']:+.2f}, {row['ΔFID high']:+.2f}]",
            value=float(row["ΔFID high"]), op="<=", bar=float(floor)))
    return rows


def organism_statistics(bundles: dict[str, Bundle]) -> pd.DataFrame:
    """:func:`embeddings.first_time_summary` of each model (the training logs' statistics), with its shipped
    quality record's ``per_digit`` where it has one."""
    rows = {}
    for name, bundle in bundles.items():
        record = CHECKPOINT_DIR / name / "quality.json"
        per_digit = json.loads(record.read_text())["per_digit"] if record.is_file() else float("nan")
        rows[name] = first_time_summary(bundle) | {"per_digit": per_digit}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------------
#                                 One pruning protocol on a DiT and a U-Net
# ---------------------------------------------------------------------------------------------------


def organism_pruning(bundle: Bundle, n_samples: int, num_steps: int, cfg_scale: float, tail_share: float,
                     head_k: int, seed: int, n_boot: int) -> pd.DataFrame:
    """The :data:`PRUNING_KEYS` of :func:`regime.pruning_settings`, sampled from the same noise, scored by MNIST-FID
    and accuracy.

    Returns one row per setting (indexed by its key) in the columns :func:`regime.pruning_claims` reads
    (``per_digit`` is the class accuracy), with the FID and its paired change besides.
    """
    evaluator = quality.evaluator_for(bundle, n_kid=n_samples, seed=seed, device=str(bundle.device))
    labels = balanced_labels(bundle.num_classes, n_samples)
    settings = [setting for setting in regime.pruning_settings(bundle, num_steps, tail_share, 1, head_k)
                if setting[0] in PRUNING_KEYS]  # last_k = 1: that setting is not among the keys
    sets = {key: _sample_set(bundle, evaluator, labels, num_steps, cfg_scale, seed, mask, schedule)
            for key, _, mask, schedule in settings}
    table = metrics.bootstrap_table(sets, evaluator.reference, "unpruned", n_boot=n_boot, seed=seed, progress=False)
    rows = []
    for key, label, mask, _ in settings:
        accuracy = _change(table, key, "accuracy")
        rows.append({"key": key, "setting": label, "removed": 0.0 if mask is None else mask.removed_fraction,
                     **_change(table, key, "FID"), "per_digit": accuracy["accuracy"],
                     "Δ per_digit": accuracy["Δaccuracy"], "CI low": accuracy["Δaccuracy low"],
                     "CI high": accuracy["Δaccuracy high"]})
    return pd.DataFrame(rows).set_index("key")

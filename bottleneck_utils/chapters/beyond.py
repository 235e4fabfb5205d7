"""The "Beyond the paper" chapter's measurements: bottleneck-trained variants against their control, and the
pruning protocol (:mod:`chapters.pruning`) on a DiT and a class-conditioned U-Net. Reads shipped organisms; no
training happens here.

Quality is MNIST-FID and class accuracy (:func:`quality.evaluator_for`) of class-balanced CFG samples. Every
model is sampled from the same noise and labels, so a change against the control is a paired bootstrap interval
(:func:`metrics.bootstrap_table`); the noise floor is the spread (max − min) of the control's FID over
``noise_seeds`` unpaired reruns with other noise.
"""

from __future__ import annotations

import pandas as pd

from bottleneck_utils import adaln_code, adaln_cost, integrity, metrics
from bottleneck_utils.chapters import pruning, regime, report
from bottleneck_utils.embeddings import first_time_summary
from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import quality, recipes
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


def variant_quality(names: list[str], n_samples: int, num_steps: int, cfg_scale: float, seed: int,
                    noise_seeds: list[int], n_boot: int, device: str = "cpu") -> tuple[pd.DataFrame, pd.Series]:
    """FID and accuracy of each variant with its paired change against :data:`CONTROL`, and the control's FID at
    ``seed`` and every noise seed (the noise floor is their max − min)."""
    unknown = sorted(set(names) - set(recipes.VARIANTS))
    if unknown:
        raise ValueError(f"{unknown} are not beyond variants; choose from {list(recipes.VARIANTS)}")
    if CONTROL not in names:
        raise ValueError(f"the control {CONTROL} is not shipped: train it with python -m bottleneck_utils.organisms.cli beyond train {CONTROL}")
    bundles = {name: load(name, device=device) for name in names}
    evaluator = quality.evaluator_for(bundles[CONTROL], n_kid=n_samples, seed=seed, device=device)
    labels = balanced_labels(bundles[CONTROL].num_classes, n_samples)
    sets = {name: _sample_set(bundle, evaluator, labels, num_steps, cfg_scale, seed) for name, bundle in bundles.items()}
    table = metrics.bootstrap_table(sets, evaluator.reference, CONTROL, n_boot=n_boot, seed=seed, progress=False)
    rows = [{"variant": name, "code width": adaln_code.code_width(bundles[name].transformer),
             "L1 λ": recipes.VARIANTS[name].l1_c,
             **pruning.change_columns(table, name, "FID"), **pruning.change_columns(table, name, "accuracy")} for name in names]
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
    config = recipes.VARIANT_BASE.transformer
    hidden, depth = config["num_attention_heads"] * config["attention_head_dim"], config["num_layers"]
    tokens = (config["sample_size"] // config["patch_size"]) ** 2
    plain = adaln_code.adaln_macs(hidden, depth)
    table["adaLN MACs share"] = [adaln_code.adaln_macs(hidden, depth, recipes.VARIANTS[n].code_width) / plain
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
            ours=f"ΔFID {pruning.interval_text(row['ΔFID'], row['ΔFID low'], row['ΔFID high'])}",
            value=float(row["ΔFID high"]), op="<=", bar=float(floor)))
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
#                                               The verdict
# ---------------------------------------------------------------------------------------------------


def claims(quality: pd.DataFrame, floor: float, organism_stats: pd.DataFrame, pruned: dict[str, pd.DataFrame],
           bands: dict) -> tuple[list[dict], list[dict]]:
    """The chapter's verdict rows: :func:`kept_rows` of the variants, then for each organism of ``pruned`` (its
    :func:`pruning.organism_runs`) the regime's preconditions on its ``organism_stats`` row and the pruning claims
    (:func:`pruning.rung_claims`), each prefixed by the organism's name. Returns the kept rows and the organism
    rows."""
    kept = kept_rows(quality, floor)
    organism_rows = []
    for name, results in pruned.items():
        requires = [row | {"claim": f"{name}: {row['claim']}"} for row in
                    regime.precondition_rows(organism_stats.loc[name], bands)]
        organism_rows += requires + [row | {"claim": f"{name}: {row['claim']}"}
                                     for row in pruning.rung_claims(results, requires)]
    return kept, organism_rows

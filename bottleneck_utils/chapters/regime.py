"""The regime question: which training factor moves c toward the paper's regime (the "When does the bottleneck
appear?" chapter). Reads the shipped ladder rungs (:data:`bottleneck_utils.organisms.recipes.RUNGS`); no training happens here.

The paper's regime is the range its ImageNet DiTs span (Tables 1 and 4): nPR(c) 1.5–10.5%, cos(c) 0.90–0.995,
cos(y) 0.52–0.85, nPR(y) 36–70%. A statistic's distance to its band is 0 inside the band, else the gap to the
nearer edge. An axis moves a statistic *toward* the regime when the distance at the axis's last level is smaller
than at its first by more than ``MOVE_FRACTION`` of the first distance (and *away* when larger by as much);
anything less is *flat*.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from bottleneck_utils import integrity
from bottleneck_utils.chapters import paper, report
from bottleneck_utils.embeddings import class_embeddings, timestep_embeddings
from bottleneck_utils.integrity import CHECKPOINT_DIR, shipped_fix
from bottleneck_utils.models import Bundle
from bottleneck_utils.organisms import quality, recipes, train
from bottleneck_utils.organisms.recipes import Recipe

# axis → its rungs, from the base rung toward the paper's setting (ImageNet's 1000 classes, width 1152, DiT's lr
# 1e-4, SiT/REPA's flow objective, DiT's far longer training); the timestep axis goes from the usual 1000 to
# Fig. 43's shorter schedules
AXES = {
    "classes": ["ladder/c10", "ladder/c100", "ladder/c1000"],
    "width": ["ladder/c10", "ladder/d128", "ladder/d256", "ladder/d512"],
    "learning rate": ["ladder/c10", "ladder/lr1e-4"],
    "train timesteps": ["ladder/c10", "ladder/T200", "ladder/T100", "ladder/T50"],
    "objective (10 classes)": ["ladder/c10", "ladder/flow-c10"],
    "objective (1000 classes)": ["ladder/c1000", "ladder/flow-c1000"],
    "training length": ["ladder/c10", "ladder/c10-long"],
    "training length (width 256)": ["ladder/d256", "ladder/d256-long"],
}
STATISTICS = ("npr_c", "cos_c", "cos_y", "npr_y")
PARAMETERS = {"device": str, "seed": int, "num_samples": int, "num_steps": int, "autocast": str, "tail_share": float,
              "last_k": int, "head_ks": list}
"""The regime chapter's parameters: name → accepted type(s) (:func:`report.notebook_parameters`)."""
MOVE_FRACTION = 0.1
REBUILDS_DIR = report.ROOT / "results" / "rebuild"  # replicates rebuilt from a fresh clone (rebuild_table)


def paper_bands() -> dict[str, tuple[float, float]]:
    """The range of each statistic over the paper's six ImageNet DiTs (Table 4's y + t and y-alone columns)."""
    rows = [row for name, row in paper.TABLE4.items() if name != "UViT (concat)"]
    columns = {"npr_c": "nPR_yt", "cos_c": "cosine_yt", "cos_y": "cosine_y", "npr_y": "nPR_y"}
    return {key: (min(r[column] for r in rows), max(r[column] for r in rows)) for key, column in columns.items()}


def describe_recipe(recipe: Recipe) -> str:
    """One line naming a rung's recipe: data, geometry, width, depth, optimiser, objective and length."""
    net = recipe.transformer
    side, patch = net["sample_size"], net["patch_size"]
    return (f"{recipe.classes} classes, {recipe.cell}×{recipe.cell} digits on a {side}×{side} canvas, patch "
            f"{patch} ({(side // patch) ** 2} tokens), width {net['num_attention_heads'] * net['attention_head_dim']}, "
            f"{net['num_layers']} blocks, AdamW at {recipe.lr:g}, batch {recipe.batch_size}, "
            f"{recipe.objective} over {recipe.train_timesteps} timesteps, {recipe.steps:,} steps")


def distance_to_band(value: float, band: tuple[float, float]) -> float:
    """0 inside ``band``, else the gap to its nearer edge."""
    low, high = band
    return max(low - value, value - high, 0.0)


def shipped_rungs() -> list[str]:
    """The ladder rungs shipped in the package data (each has a log, an embedder and a quality record); the base
    rung's seed replicates other than ``ladder/c10`` itself are :func:`replicate_table`'s, not rungs of an axis."""
    replicates = {name for name, seed in recipes.BASE_SEEDS.items() if seed != 0}
    return sorted(name for name in (f"ladder/{p.name}" for p in (CHECKPOINT_DIR / "ladder").glob("*")
                                    if (p / "train_log.csv").is_file()) if name not in replicates)


def rung_table(rungs: list[str], folder_of=lambda name: CHECKPOINT_DIR / name) -> pd.DataFrame:
    """One row per rung: its final EMA statistics (:func:`stats.summary` keys), steps and measured quality, read
    from ``folder_of(name)`` (default: the shipped checkpoint)."""
    rows = []
    for name in rungs:
        folder = folder_of(name)
        last = training_log(name, folder).iloc[-1]
        record = quality.read_record(folder / "quality.json", name) if (folder / "quality.json").is_file() else {}
        rows.append({"rung": name, "steps": int(last["step"]),
                     **{key: float(last[f"{key}_ema"]) for key in ("cos_c", "cos_y", "npr_c", "npr_y", "t_share",
                                                                   "head_energy", "tail_rel")},
                     "per_digit": record.get("per_digit", float("nan")),
                     "all_digits": record.get("all_digits", float("nan")),
                     "meets_bar": record.get("meets_bar", False)})
    return pd.DataFrame(rows).set_index("rung")


def in_regime(row: pd.Series, bands: dict) -> bool:
    """The precondition of the paper's sparsity claims: nPR(c) at or below the band's top and cos(y) at or above
    its bottom (the two statistics our organisms miss by the widest margin)."""
    return row["npr_c"] <= bands["npr_c"][1] and row["cos_y"] >= bands["cos_y"][0]


def regime_distance(row: pd.Series, bands: dict) -> float:
    """Distance to the regime: the sum over :data:`STATISTICS` of each band distance in units of the band's width."""
    return sum(distance_to_band(row[key], bands[key]) / (bands[key][1] - bands[key][0]) for key in STATISTICS)


# ---------------------------------------------------------------------------------------------------
#                          The in-regime recipe a laptop can rebuild, in seed replicates
# ---------------------------------------------------------------------------------------------------


def replicate_table(bands: dict, seeds: dict[str, int] | None = None) -> pd.DataFrame:
    """The shipped seed replicates of one recipe (``seeds``: name → seed; default the in-regime recipe's,
    :data:`recipes.REGIME_SEEDS`; the base rung's are :data:`recipes.BASE_SEEDS`): their final EMA statistics
    and quality (:func:`rung_table`), seed, whether each is in the regime (:func:`in_regime`) and its distance."""
    seeds = recipes.REGIME_SEEDS if seeds is None else seeds
    shipped = [name for name in seeds if (CHECKPOINT_DIR / name / "train_log.csv").is_file()]
    table = rung_table(shipped)
    table.insert(0, "seed", [seeds[name] for name in shipped])
    table["in regime"] = [in_regime(row, bands) for _, row in table.iterrows()]
    table["distance"] = [regime_distance(row, bands) for _, row in table.iterrows()]
    return table


def rebuild_table(bands: dict) -> pd.DataFrame:
    """The replicates rebuilt from a fresh clone (:data:`REBUILDS_DIR`: one folder per rebuild, the name's ``/`` as
    ``--``, with the log, meta and quality record the clone installed): their final EMA statistics and quality
    (:func:`rung_table`), whether in the regime, what trained them and how long, and the first logged step at which
    the rebuild's log leaves the shipped replicate's (None: it retraces it)."""
    folders = {folder.name.replace("--", "/"): folder for folder in sorted(REBUILDS_DIR.glob("*--*"))}
    if not folders:
        return pd.DataFrame()
    table = rung_table(list(folders), folder_of=folders.get)
    rows = []
    for name, folder in folders.items():
        meta = integrity.read_json(folder / "meta.json", f"the rebuild {name}'s meta", f"copy it again into {folder}")
        record = meta["provenance"]
        rows.append({"trained on": "; ".join(f"{s['device']}, {s['precision']}" for s in record["segments"]),
                     "wall h": record["wall_time_s"] / 3600, "commit": record["commit"][:7],
                     "leaves the shipped log at step": first_divergence(name, name, folder)})
    table["in regime"] = [in_regime(row, bands) for _, row in table.iterrows()]
    return pd.concat([table, pd.DataFrame(rows, index=table.index)], axis=1)


def rebuild_sentence(rebuilds: pd.DataFrame) -> str:
    """What each rebuild of :func:`rebuild_table` shows, one sentence each."""
    if rebuilds.empty:
        return "No rebuild is recorded in results/rebuild yet."
    return " ".join(
        f"`{name}` was rebuilt from a fresh clone at {row['commit']} on {row['trained on']}: "
        f"{row['wall h']:.2f} h of training; its log "
        + ("retraces the shipped one" if row["leaves the shipped log at step"] is None
           else f"leaves the shipped one's at step {row['leaves the shipped log at step']}")
        + f", and it is {'in' if row['in regime'] else 'not in'} the regime (nPR(c) {row['npr_c']:.2%}, "
          f"cos(y) {row['cos_y']:.3f})."
        for name, row in rebuilds.iterrows())


def replicate_sentence(table: pd.DataFrame) -> str:
    """"n of m seeds in the regime", with the replicates not shipped yet named."""
    pending = [name for name in recipes.REGIME if name not in table.index]
    return (f"{int(table['in regime'].sum())} of {len(table)} shipped seeds are in the regime"
            + (f" ({', '.join(pending)} not trained yet: make train-regime)" if pending else ""))


def replicates_figure(names: list[str], bands: dict, compare: str = "ladder/d256-long"):
    """nPR(c) and cos(y) of each replicate's EMA weights along training beside ``compare``'s, with the paper's
    bands; returns the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, key, label in zip(axes, ("npr_c", "cos_y"), ("nPR(c)", "cos(y)")):
        ax.axhspan(*bands[key], color="0.85")
        for name in [*names, compare]:
            log = training_log(name)
            ax.plot(log["step"], log[f"{key}_ema"], label=name.split("/")[1], color="0.4" if name == compare else None,
                    linestyle=":" if name == compare else "-")
        ax.set(xlabel="training step", title=label)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


# A jump: nPR(c) of the live weights rises by this much between two logged steps (100 steps apart). Between any two
# logged steps after the first 500, the CPU runs' nPR(c) rises by 0.05 at most (npr_jumps reports that largest rise).
JUMP_RISE = 0.1
JUMP_FROM = 500  # the first steps' rise from the initial embedding is not a jump


def _segment_of(name: str, step: int) -> str:
    """The device and precision that trained ``name`` up to ``step``, from its ``meta.json`` provenance."""
    meta = integrity.read_json(CHECKPOINT_DIR / name / "meta.json", f"{name}'s meta", shipped_fix(name))
    for segment in meta.get("provenance", {}).get("segments", []):
        if segment["steps"][0] < step <= segment["steps"][1]:
            return f"{segment['device']}, {segment['precision']}"
    return "not recorded"


def npr_jumps(names: list[str]) -> tuple[pd.DataFrame, float]:
    """Every jump of nPR(c) in the training logs of ``names`` (a rise of at least :data:`JUMP_RISE` between two
    logged steps after :data:`JUMP_FROM`): its step, nPR(c) and the head's share of ‖c‖² (``head_energy``) before
    and after, the loss logged at that step over the median of the ten logged before it, and the device and
    precision that trained that step. Also returns the largest rise in the runs without a jump, the noise the
    threshold stands above."""
    rows, quiet_rise = [], 0.0
    for name in names:
        log = training_log(name)
        rise = log["npr_c"].diff().where(log["step"] > JUMP_FROM, 0.0)
        jumps = log.index[rise >= JUMP_RISE]
        if len(jumps) == 0:
            quiet_rise = max(quiet_rise, float(rise.max()))
        for i in jumps:
            rows.append({"run": name, "step": int(log.at[i, "step"]),
                         "nPR(c) before": float(log.at[i - 1, "npr_c"]), "nPR(c) after": float(log.at[i, "npr_c"]),
                         "head share before": float(log.at[i - 1, "head_energy"]),
                         "head share after": float(log.at[i, "head_energy"]),
                         "loss / median before": float(log.at[i, "loss"] / log["loss"].iloc[max(i - 10, 1):i].median()),
                         "trained on": _segment_of(name, int(log.at[i, "step"]))})
    columns = ["run", "step", "nPR(c) before", "nPR(c) after", "head share before", "head share after",
               "loss / median before", "trained on"]
    return pd.DataFrame(rows, columns=columns), quiet_rise


def training_log(name: str, folder: Path | None = None) -> pd.DataFrame:
    """A shipped rung's or replicate's training log (or the one in ``folder``; :func:`train.read_log`: a damaged
    one is refused in one line)."""
    return train.read_log((folder or CHECKPOINT_DIR / name) / "train_log.csv", shipped_fix(name))


def first_divergence(first: str, second: str, second_folder: Path | None = None) -> int | None:
    """The first logged step at which two runs' logs differ in any statistic (None when one retraces the other);
    ``second_folder`` reads the second log from elsewhere (a rebuild)."""
    a, b = training_log(first).set_index("step"), training_log(second, second_folder).set_index("step")
    shared = a.index.intersection(b.index)
    columns = [column for column in a.columns if column != "loss"]
    differ = (a.loc[shared, columns] != b.loc[shared, columns]).any(axis=1)
    return int(differ.idxmax()) if differ.any() else None


def jump_sentence(jumps: pd.DataFrame, n_runs: int) -> str:
    """What :func:`npr_jumps` found, in one sentence: how many jumps in how many of ``n_runs`` runs, and what
    trained the steps where they happened."""
    if jumps.empty:
        return f"No jump in the {n_runs} runs."
    runs = jumps["run"].unique()
    devices = ", ".join(sorted(jumps["trained on"].unique()))
    head_falls = (jumps["head share after"] < jumps["head share before"]).sum()
    return (f"{len(jumps)} jump{'s' if len(jumps) > 1 else ''} in {len(runs)} of the {n_runs} runs "
            f"({', '.join(f'`{r}`' for r in runs)}), in step ranges trained on {devices}; none in the other "
            f"{n_runs - len(runs)} runs. The head's share of ‖c‖² fell in {head_falls} of the {len(jumps)}.")


def spread_sentence(tables: dict[str, pd.DataFrame]) -> str:
    """Which recipes' seed replicates the seed spread comes from (``tables``: a recipe's description → its
    :func:`replicate_table`), with their seed counts; a recipe with fewer than two seeds is named as not counted."""
    return "; ".join(f"{label} ({len(table)} seeds{'' if len(table) >= 2 else ', not counted'})"
                     for label, table in tables.items())


def seed_spread(*replicate_tables: pd.DataFrame) -> dict[str, float]:
    """The change that the seed alone makes: max − min of each of :data:`STATISTICS` over one recipe's seed
    replicates (:func:`replicate_table`), the widest over the recipes given (each with at least two seeds).

    Raises:
        ValueError: when no recipe has two shipped seeds.
    """
    tables = [table for table in replicate_tables if len(table) >= 2]
    if not tables:
        raise ValueError("no recipe has two shipped seed replicates: train them with `make train-ladder` "
                         "(ladder/c10-s1, -s2) or `make train-regime`")
    return {key: max(float(table[key].max() - table[key].min()) for table in tables) for key in STATISTICS}


def axis_moves(table: pd.DataFrame, bands: dict, spread: dict[str, float] | None = None) -> pd.DataFrame:
    """For every axis whose first rung and at least one other are shipped: does each statistic move toward the
    regime from the first rung to the furthest shipped one?

    The column ``ends below bar`` names the end rungs whose ``meets_bar`` is False (a table without that column
    counts every rung as meeting it): a move between models that do not yet do the task says little. The column
    ``pending`` names the axis's rungs not shipped yet, so a verdict read off part of an axis says so. With a
    ``spread`` (:func:`seed_spread`), a move counts only when the statistic changes by more than the seed spread;
    a smaller one reads "within seed spread".
    """
    rows = []
    for axis, rungs in AXES.items():
        present = [r for r in rungs if r in table.index]
        if len(present) < 2 or present[0] != rungs[0]:
            continue
        ends = (rungs[0], present[-1])
        first, last = table.loc[ends[0]], table.loc[ends[1]]
        below = ", ".join(r.split("/")[1] for r in ends if not table.loc[r].get("meets_bar", True))
        pending = ", ".join(r.split("/")[1] for r in rungs if r not in table.index)
        for key in STATISTICS:
            before, after = distance_to_band(first[key], bands[key]), distance_to_band(last[key], bands[key])
            change = after - before
            word = "in the band" if before == after == 0 else (
                "toward" if change < -MOVE_FRACTION * before else "away" if change > MOVE_FRACTION * before else "flat")
            if spread is not None and word in ("toward", "away") and abs(last[key] - first[key]) <= spread[key]:
                word = "within seed spread"
            rows.append({"axis": axis, "from → to": " → ".join(r.split("/")[1] for r in ends),
                         "statistic": key, "first": first[key], "last": last[key], "moves": word,
                         "ends below bar": below, "pending": pending})
    return pd.DataFrame(rows)


def _data_end(bundle: Bundle) -> float:
    return 0.0 if bundle.time.kind == "ddpm" else 1.0 - bundle.time.first_time


@torch.no_grad()
def mean_c_movement(bundle: Bundle) -> float:
    """‖c̄(data end) − c̄(t₀)‖ / ‖c̄(t₀)‖ of the class-mean c: how far c travels along the sampling path."""
    y = class_embeddings(bundle).double().mean(0)  # (d,)
    t = timestep_embeddings(bundle, [bundle.time.first_time, _data_end(bundle)]).double()  # (2, d)
    start, end = y + t[0], y + t[1]
    return ((end - start).norm() / start.norm()).item()


@torch.no_grad()
def tail_overlap(bundle: Bundle, share: float) -> float:
    """Overlap |A ∩ B| / |A| of the tail sets (the ``share`` smallest |c̄ᵢ| of the class-mean c) at t₀ and at the
    data end of the schedule (t = 0 for DDPM, 1 − t₀ for flow): how much a mask fixed at t₀ differs from one
    recomputed at the last step."""
    y = class_embeddings(bundle).double()  # (n, d)
    k = round(share * bundle.hidden_size)
    sets = []
    for time in (bundle.time.first_time, _data_end(bundle)):
        mean_c = (y + timestep_embeddings(bundle, time)[0].double()).mean(0)  # (d,)
        sets.append(set(mean_c.abs().argsort()[:k].tolist()))
    return len(sets[0] & sets[1]) / k


# ---------------------------------------------------------------------------------------------------
#                          The regime's preconditions, shared by every chapter
# ---------------------------------------------------------------------------------------------------


def precondition_rows(row: pd.Series, bands: dict) -> list[dict]:
    """The two precondition rows of the pruning claims on a rung (see :func:`in_regime`), under the book's rule."""
    return [report.precondition_row("c is sparse: nPR(c) at most the paper's largest (DiT-XL/2)",
                                    paper=f"≤ {bands['npr_c'][1]:.2%}", ours=f"{row['npr_c']:.2%}",
                                    value=float(row["npr_c"]), op="<=", bar=bands["npr_c"][1]),
            report.precondition_row("y alone is aligned: cos(y) at least the paper's smallest (REPA)",
                                    paper=f"≥ {bands['cos_y'][0]:.4f}", ours=f"{row['cos_y']:.4f}",
                                    value=float(row["cos_y"]), op=">=", bar=bands["cos_y"][0])]


def verdicts_beside(rows_by_model: dict[str, list[dict]]) -> pd.DataFrame:
    """The same verdict rows judged on several models, side by side: one row per claim (preconditions first, in the
    first model's order), the paper's column, then one column per model, "ours → verdict".

    The first model is the judged one; the others are shown beside it (a seed replicate, the small-model contrast).
    A precondition statistic stays a precondition on every model: where it is unmet, the claims that require it
    read "not testable here", never "not reproduced".

    Raises:
        ValueError: a model's rows break the rule, or name other claims than the first model's.
    """
    names = list(rows_by_model)
    claims_of = {name: [row["claim"] for row in rows] for name, rows in rows_by_model.items()}
    for name, rows in rows_by_model.items():
        problems = report.rule_violations(rows)
        if problems:
            raise ValueError(f"{name}: verdicts that do not follow the rule: " + "; ".join(problems))
        if claims_of[name] != claims_of[names[0]]:
            raise ValueError(f"{name} is judged on other claims than {names[0]}")
    first = rows_by_model[names[0]]
    table = pd.DataFrame({"claim": [row["claim"] for row in first], "paper": [row["paper"] for row in first],
                          **{name: [f"{row['ours']} → {row['verdict']}" for row in rows]
                             for name, rows in rows_by_model.items()}})
    return table.set_index("claim")

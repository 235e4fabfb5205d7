"""The pruning claims on the in-regime organisms, measured so that they can fail (the regime chapter's verdicts).

**Metric.** The canvas Fréchet distance (CFD): the Fréchet distance between features of generated canvases and of
real test canvases of the same requested classes, the features being the MNIST classifier's penultimate layer of
*every* cell (:func:`composite.canvas_features`), projected on the top :data:`FEATURE_DIMS` principal directions
of the real features. Agreement reads the labelled cell only and sits at its ceiling unpruned; the CFD also sees
the unlabelled cells fade. A setting is compared with the unpruned run of the same noise and labels: its paired
change ΔCFD with the package's paired bootstrap (:func:`metrics.paired_resamples`, :func:`metrics.normal_interval`).

**The rules** (each claim's test, in :func:`claims`):

* *floor*: the unpruned model against itself, its run from noise seed s + 1 against the one from seed s, paired
  the same way; the floor is the larger |end| of that interval.
* *harmless* (an equivalence test): the setting's 95% interval lies within ± floor.
* *the test sees harm* (the precondition of every "harmless" claim): the random set holding the tail's share of
  ‖c‖² (:func:`masks.energy_matched_random_mask`) is not harmless by that test. Otherwise a "harmless" says only
  that the measure cannot see a perturbation of that size: "not testable here".
* *harms less than a control*: the top of the setting's interval lies below the bottom of the control's (a
  negative ΔCFD, a better CFD, counts as less harm).
* *destroys generation*: CFD at least :data:`DESTROYED_RATIO` times the unpruned one, the bar between Table 2's
  two head rows (see there).

Judged at two CFG scales: the one the organism's quality record picks and the largest with unpruned agreement
below :data:`HEADROOM_AGREEMENT`. The claims hold for the recipe when they hold on every in-regime seed.

The measurement is too long for ``make book`` (about 25 min an organism on one thread): ``python -m
bottleneck_utils.chapters.in_regime measure NAME`` writes a resumable results file with its provenance; the chapter
reads it, refuses one whose model, parameters or sampler differ, and re-samples a live subset that must match.
"""

from __future__ import annotations

import argparse
import json
import math
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bottleneck_utils import masks, metrics
from bottleneck_utils.chapters import paper, pruning, report
from bottleneck_utils.images import to_uint8, write_atomically
from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import classifier, composite, quality, recipes
from bottleneck_utils.provenance import git_commit, hardware
from bottleneck_utils.sampling import balanced_labels, resolve_autocast, sample

RESULTS_DIR = report.ROOT / "results" / "in_regime"
FEATURE_DIMS = 128  # principal directions of the real canvases' 4·128 features kept for the CFD
N_BOOT = 200
HEADROOM_AGREEMENT = 0.95  # the second CFG scale: unpruned per-digit agreement below this leaves room to fall
REFERENCE_SIZE = 10_000  # real canvases in the reference
LIVE_SAMPLES = 100  # the first samples of each setting, kept as 8-bit images and re-sampled by the chapter
FEATURE_NETWORK = f"mnist-classifier fc1 of the 4 cells, top {FEATURE_DIMS} PCs of the real features"
_HEAD = {row["removed"]: row for row in paper.TABLE2 if row["mask"] == "head"}  # removed count → Table 2 row
_BASE_FID = paper.TABLE2[0]["FID"]
# "Destroys generation": Table 2's head rows raise REPA's FID 1.09× (2 of 1152 removed, samples intact) and 73×
# (8 of 1152, destroyed); the bar is their geometric mean, so a ratio counts as destroyed nearer the second.
DESTROYED_RATIO = math.sqrt(_HEAD[2]["FID"] / _BASE_FID * _HEAD[8]["FID"] / _BASE_FID)
PAPER_HEAD_SHARES = {count: count / paper.TABLE1["REPA"]["D"] for count in sorted(_HEAD)}  # 2/1152, 8/1152
DEFAULTS = {"num_samples": 1000, "num_steps": 25, "seed": 0, "tail_share": paper.HEADLINE_SHARE, "last_k": 3,
            "head_ks": [1, 2, 4, 8, 16], "autocast": "none"}

# ---------------------------------------------------------------------------------------------------
#                                       Settings and the study
# ---------------------------------------------------------------------------------------------------


def paper_head_ratios() -> dict[int, float]:
    """Table 2's head rows: coordinates removed → FID ratio to the baseline (the two ends of the destroyed bar)."""
    return {count: row["FID"] / _BASE_FID for count, row in _HEAD.items()}


def paper_head_rows() -> list[tuple[int, float, int]]:
    """(coordinates removed, share of D, D) of Table 2's head rows."""
    return [(count, share, paper.TABLE1["REPA"]["D"]) for count, share in PAPER_HEAD_SHARES.items()]


def head_k_of_share(share: float, hidden_size: int) -> int:
    """The head count of ``share`` of D on a model of width ``hidden_size`` (at least 1)."""
    return max(1, round(share * hidden_size))


def check_study(bundle: Bundle, p: dict) -> None:
    """One-line errors for a study that cannot run: shares outside (0, 1), a head k outside 1..D−1, too few samples."""
    if not 0 < p["tail_share"] < 1:
        raise ValueError(f"tail_share must lie strictly between 0 and 1, got {p['tail_share']!r}")
    bad = [k for k in p["head_ks"] if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < bundle.hidden_size]
    if bad or not p["head_ks"]:
        raise ValueError(f"head_ks must be whole numbers in 1..{bundle.hidden_size - 1} (k < D = {bundle.hidden_size}), "
                         f"got {p['head_ks']!r}")
    if p["num_samples"] < 10 * bundle.num_classes:
        raise ValueError(f"num_samples must be at least 10 per class ({10 * bundle.num_classes}), got {p['num_samples']}")


def settings(bundle: Bundle, p: dict) -> list[dict]:
    """Every setting of the study: key, label, group, mask, schedule, k (head only), removed count share and
    ‖c‖² share at t₀. Every mask has both random controls (the same count; the same share of ‖c‖²)."""
    check_study(bundle, p)
    steps = p["num_steps"]
    tail = masks.tail_mask(bundle, masks.threshold_for_fraction(bundle, p["tail_share"], num_steps=steps),
                           num_steps=steps)
    share = f"{tail.removed_fraction:.0%}"
    rows = [("unpruned", "unpruned", "baseline", None, "every", None),
            ("tail-every", f"tail {share}, every step", "tail", tail, "every", None),
            ("tail-first", f"tail {share}, t₀ only", "tail", tail, "first", None),
            ("tail-last", f"tail {share}, last {p['last_k']} steps", "tail", tail, masks.Schedule("last", p["last_k"]),
             None),
            ("tail-random-count", f"random, the tail's count ({share})", "tail control", masks.random_mask(tail, 1),
             "every", None),
            ("tail-random-energy", "random, the tail's ‖c‖² share", "tail control",
             masks.energy_matched_random_mask(bundle, tail, num_steps=steps, seed=1), "every", None)]
    for k in p["head_ks"]:
        head = masks.topk_mask(bundle, k, num_steps=steps)
        rows += [(f"head-{k}-fixed", f"head top-{k}, fixed at t₀", "head", head, "every", k),
                 (f"head-{k}-recomputed", f"head top-{k}, recomputed every step", "head", masks.recomputed(head),
                  "every", k),
                 (f"head-{k}-random-count", f"random {k}", "head control", masks.random_mask(head, 1), "every", k),
                 (f"head-{k}-random-energy", f"random, top-{k}'s ‖c‖² share", "head control",
                  masks.energy_matched_random_mask(bundle, head, num_steps=steps, seed=1), "every", k)]
    return [{"key": key, "setting": label, "group": group, "mask": mask, "schedule": schedule, "k": k,
             "removed": 0.0 if mask is None else mask.removed_fraction,
             "energy": 0.0 if mask is None else masks.removed_energy_share(bundle, mask, num_steps=steps)}
            for key, label, group, mask, schedule, k in rows]


def judging_scales(name: str) -> list[float]:
    """The two CFG scales a rung is judged at: its quality record's best, and the largest with unpruned per-digit
    agreement below :data:`HEADROOM_AGREEMENT` (left out when every recorded scale is above it)."""
    record = quality.read_record(CHECKPOINT_DIR / name / "quality.json", name)
    below = [float(cfg) for cfg, row in record["by_cfg"].items() if row["per_digit"] < HEADROOM_AGREEMENT]
    return [float(record["best_cfg"]), *([max(below)] if below else [])]


def study_spec(bundle: Bundle, p: dict, device: str = "cpu") -> dict:
    """What a results file must have been measured with: model, sha256, parameters, CFG scales and the sampler."""
    autocast = resolve_autocast(p["autocast"], device)
    return {"model": bundle.name, "model_sha256": bundle.sha256, "parameters": {key: p[key] for key in DEFAULTS},
            "cfg_scales": judging_scales(bundle.name), "live_samples": LIVE_SAMPLES,
            "sampler": {"family": None, "solver": f"{type(bundle.scheduler).__name__} (the organism's own)",
                        "num_steps": p["num_steps"], "cfg_channels": "all", "guidance_interval": "every step",
                        "shift": None, "precision": autocast or "float32", "vae": None,
                        "samples_per_setting": p["num_samples"], "labels": "balanced",
                        "feature_network": FEATURE_NETWORK, "distance": "canvas Fréchet distance"}}



# ---------------------------------------------------------------------------------------------------
#                           The canvas Fréchet distance and one setting's run
# ---------------------------------------------------------------------------------------------------


class CanvasSpace:
    """The real side of the CFD: real test canvases' features, their top principal directions and statistics."""

    def __init__(self, reader, num_classes: int, cell: int, seed: int = 0):
        real = composite.real_canvases(balanced_labels(num_classes, REFERENCE_SIZE), num_classes, cell, seed)
        features = composite.canvas_features(reader, real)  # (m, 4·128)
        self.mean = features.mean(0)
        eigenvalues, vectors = np.linalg.eigh(np.cov(features, rowvar=False))
        self.basis = vectors[:, ::-1][:, :FEATURE_DIMS].copy()  # (4·128, FEATURE_DIMS), largest variance first
        self.kept_variance = float(eigenvalues[::-1][:FEATURE_DIMS].sum() / eigenvalues.sum())
        self.reference = metrics.Reference.from_features(self.project(features), "real test canvases")

    def project(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) @ self.basis  # (n, FEATURE_DIMS)

    def cfd(self, projected: np.ndarray) -> float:
        return metrics.fid_to_reference_eig(projected, self.reference)

    def cfd_draws(self, projected: np.ndarray, seed: int) -> np.ndarray:
        """The CFD on each of the :data:`N_BOOT` paired resamples (the same index draws for every setting)."""
        return np.array([self.cfd(projected[i]) for i in metrics.paired_resamples(len(projected), N_BOOT, seed)])


def run_setting(bundle: Bundle, setting: dict, labels: torch.Tensor, cfg: float, seed: int, p: dict, reader,
                space: CanvasSpace, autocast) -> dict:
    """Samples one setting and returns its images (n, 1, H, W) in [0, 1], projected features and the digit read
    in every cell (n, 4)."""
    images = sample_setting(bundle, setting, labels, cfg, seed, p, autocast)
    return {"images": images, "projected": space.project(composite.canvas_features(reader, images)),
            "reads": composite.read_cells(reader, images).to(torch.int8)}


def sample_setting(bundle: Bundle, setting: dict, labels: torch.Tensor, cfg: float, seed: int, p: dict,
                   autocast) -> torch.Tensor:
    """One setting's samples (n, 1, H, W) in [0, 1]: its mask and schedule, the study's steps."""
    return sample(bundle, labels, num_steps=p["num_steps"], cfg_scale=cfg, seed=seed, mask=setting["mask"],
                  schedule=setting["schedule"], autocast=autocast, progress=False)


def summary_row(setting: dict, run: dict, baseline: dict, base_draws: np.ndarray, wanted: torch.Tensor,
                space: CanvasSpace, cfg: float, seed: int) -> dict:
    """One setting's numbers against the unpruned run of the same noise (``baseline``): CFD, its paired change
    with the 95% interval, the ratio, labelled-digit agreement, cells read as unpruned, mean |Δ pixel|."""
    cfd = space.cfd(run["projected"])
    draws = space.cfd_draws(run["projected"], seed) - base_draws
    delta = cfd - space.cfd(baseline["projected"])
    low, high = metrics.normal_interval(delta, draws)
    return {"cfg": cfg, "key": setting["key"], "setting": setting["setting"], "group": setting["group"],
            "k": setting["k"], "removed": setting["removed"], "energy": setting["energy"], "CFD": cfd,
            "ΔCFD": delta, "low": low, "high": high, "ratio": cfd / space.cfd(baseline["projected"]),
            **per_sample_summary(run["reads"], baseline["reads"], wanted,
                                 (run["images"] - baseline["images"]).abs().mean((1, 2, 3)))}


def per_sample_summary(reads: torch.Tensor, baseline_reads: torch.Tensor, wanted: torch.Tensor,
                       pixel: torch.Tensor) -> dict:
    """The summaries a results file keeps per sample too (so the chapter can recompute them): agreement of the
    labelled cells, the share of all cells read as in the unpruned sample, the mean |Δ pixel|."""
    reads, baseline_reads = torch.as_tensor(reads).long(), torch.as_tensor(baseline_reads).long()
    return {"per_digit": (reads[:, : wanted.shape[1]] == wanted).double().mean().item(),
            "cells kept": (reads == baseline_reads).double().mean().item(),
            "mean |Δ pixel|": torch.as_tensor(pixel).double().mean().item()}


# ---------------------------------------------------------------------------------------------------
#                              The results file: resumable, with its provenance
# ---------------------------------------------------------------------------------------------------

FLOOR_SETTING = {"key": "unpruned-noise", "setting": "unpruned, the next noise seed", "group": "floor", "mask": None,
                 "schedule": "every", "k": None, "removed": 0.0, "energy": 0.0}


def results_path(name: str) -> Path:
    return RESULTS_DIR / f"{name.replace('/', '--')}.npz"


def command(name: str) -> str:
    return f"python -m bottleneck_utils.chapters.in_regime measure {name}"


def read_results(path: Path, spec: dict, complete: bool = True) -> dict:
    """A results file's rows, per-sample arrays and provenance, checked against ``spec`` (:func:`study_spec`).

    Raises:
        FileNotFoundError: no file (the fix: the measuring command).
        ValueError: unreadable or truncated; measured with another model, parameters, CFG scales or sampler;
            missing settings when ``complete``. Each in one line that names the fix.
    """
    path, name = Path(path), spec["model"]
    if not path.is_file():
        raise FileNotFoundError(f"no in-regime results for {name} at {path}; measure them with `{command(name)}`")
    try:
        with np.load(path, allow_pickle=False) as handle:
            data = {key: handle[key] for key in handle.files}
        stored = json.loads(str(data.pop("spec")))
        rows, sessions = json.loads(str(data.pop("rows"))), json.loads(str(data.pop("sessions")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"the results file {path} cannot be read ({str(error).splitlines()[0]}); move it away and "
                         f"measure again with `{command(name)}`") from None
    wanted = json.loads(json.dumps(spec))
    differs = [key for key in wanted if not same(stored.get(key), wanted[key])]
    if differs:
        raise ValueError(f"the results file {path} was measured with a different {', '.join(differs)} than asked for here; "
                         f"use the file's ({ {key: stored.get(key) for key in differs} }) or move it away and measure "
                         f"again with `{command(name)}`")
    missing = len(wanted["cfg_scales"]) * expected_settings(spec) - len(rows)
    if complete and missing:
        raise ValueError(f"the results file {path} is incomplete ({missing} settings missing); resume it with "
                         f"`{command(name)}`")
    return {"rows": rows, "arrays": data, "sessions": sessions}


def same(a, b) -> bool:
    """Equal JSON values, floats up to rounding (0.3894 typed in a notebook is 38.94 / 100 computed)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def expected_settings(spec: dict) -> int:
    """Settings per CFG scale: baseline, floor, 3 tail schedules, 2 tail controls, 4 per head k."""
    return 7 + 4 * len(spec["parameters"]["head_ks"])


def write_results(path: Path, spec: dict, stored: dict) -> None:
    """Writes the results file atomically (a reader never sees half a file; an interrupted run keeps the last)."""
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, spec=np.array(json.dumps(spec)), rows=np.array(json.dumps(stored["rows"])),
                                sessions=np.array(json.dumps(stored["sessions"])), **stored["arrays"])

    write_atomically(path, write)


def stored_arrays(run: dict, baseline: dict) -> dict:
    """What a results file keeps of one setting's samples: every cell's digit, the per-sample |Δ pixel| and the
    first :data:`LIVE_SAMPLES` images in 8 bits."""
    return {"reads": run["reads"].numpy(),
            "pixel": (run["images"] - baseline["images"]).abs().mean((1, 2, 3)).float().numpy(),
            "live": to_8bit(run["images"][:LIVE_SAMPLES])}


def to_8bit(images: torch.Tensor) -> np.ndarray:
    """(n, 1, H, W) in [0, 1] → uint8 in the results files' (n, 1, H, W) layout (:func:`images.to_uint8`)."""
    return to_uint8(images).transpose(0, 3, 1, 2)


def measure(name: str, p: dict | None = None, device: str = "cpu", path: Path | None = None,
            progress: bool = True) -> Path:
    """Measures every setting of the study on ``name`` at its :func:`judging_scales` into its results file,
    resuming from the settings already there (a file measured otherwise is refused, never overwritten)."""
    p = DEFAULTS | (p or {})
    bundle = load(name, device=device)
    spec, path = study_spec(bundle, p, device), Path(path or results_path(name))
    stored = read_results(path, spec, complete=False) if path.exists() else {"rows": [], "arrays": {}, "sessions": []}
    stored["sessions"].append({"commit": git_commit(), "device": device, "hardware": hardware(),
                               "torch_threads": torch.get_num_threads()})
    done = {(row["cfg"], row["key"]) for row in stored["rows"]}
    reader, autocast = classifier.load_classifier(device), resolve_autocast(p["autocast"], device)
    space = CanvasSpace(reader, bundle.num_classes, recipes.recipe_of(name).cell, p["seed"])
    labels = balanced_labels(bundle.num_classes, p["num_samples"])
    wanted = composite.digits_of_class(labels, bundle.num_classes)
    todo = settings(bundle, p)
    order = [todo[0], FLOOR_SETTING, *todo[1:]]
    bar = tqdm(total=len(spec["cfg_scales"]) * len(order), initial=len(done), disable=not progress,
               desc=f"in-regime study of {name}")
    for cfg in spec["cfg_scales"]:
        if all((cfg, setting["key"]) in done for setting in order):
            continue
        baseline = run_setting(bundle, todo[0], labels, cfg, p["seed"], p, reader, space, autocast)
        base_draws = space.cfd_draws(baseline["projected"], p["seed"])
        for setting in order:
            if (cfg, setting["key"]) in done:
                continue
            run = baseline if setting is todo[0] else run_setting(
                bundle, setting, labels, cfg, p["seed"] + (setting is FLOOR_SETTING), p, reader, space, autocast)
            stored["rows"].append(summary_row(setting, run, baseline, base_draws, wanted, space, cfg, p["seed"]))
            stored["arrays"] |= {f"{cfg:g}/{setting['key']}/{part}": array
                                 for part, array in stored_arrays(run, baseline).items()}
            write_results(path, spec, stored)
            bar.update()
    bar.close()
    return path


def main(argv: list[str] | None = None) -> None:
    """``measure [NAME ...] [--samples N] [--device D] [--threads T]``: the in-regime study of each named rung
    (default: every shipped replicate of the in-regime recipe), resumable."""
    parser = argparse.ArgumentParser(prog="python -m bottleneck_utils.chapters.in_regime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["measure"])
    parser.add_argument("names", nargs="*", help="shipped composite rungs with weights (default: the replicates)")
    parser.add_argument("--samples", type=int, default=DEFAULTS["num_samples"], help="samples per setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 beside a training job)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.samples < 1:
        parser.error("--threads and --samples must be positive")
    names = args.names or [name for name in recipes.REGIME if (CHECKPOINT_DIR / name / "model.safetensors").is_file()]
    unknown = [name for name in names if name not in recipes.RUNGS and name not in recipes.REGIME]
    if unknown:
        parser.error(f"not a composite rung: {unknown}; choose from {sorted(recipes.REGIME)} or recipes.RUNGS")
    torch.set_num_threads(args.threads)
    for name in names:
        try:
            print(f"{name}: {measure(name, {'num_samples': args.samples}, args.device)}")
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------------
#                         Reading the results in the chapter: checks and tables
# ---------------------------------------------------------------------------------------------------

LIVE_LEVEL_SHARE = 0.01  # a live pixel may differ by one 8-bit level (rounding of a value that moved by float noise)
LIVE_READ_AGREEMENT = 0.98  # share of live cells whose digit must read as stored


def results_table(stored: dict, num_classes: int) -> pd.DataFrame:
    """The stored rows, indexed by (cfg, key), checked against the per-sample arrays they summarise: a summary
    that a hand edit changed no longer equals its recomputation, and the file is refused."""
    table = pd.DataFrame(stored["rows"]).set_index(["cfg", "key"])
    arrays, wanted = stored["arrays"], None
    for (cfg, key), row in table.iterrows():
        reads, baseline = arrays[f"{cfg:g}/{key}/reads"], arrays[f"{cfg:g}/unpruned/reads"]
        if wanted is None:
            wanted = composite.digits_of_class(balanced_labels(num_classes, len(reads)), num_classes)
        again = per_sample_summary(reads, baseline, wanted, arrays[f"{cfg:g}/{key}/pixel"])
        off = [name for name, value in again.items() if not math.isclose(value, row[name], rel_tol=1e-6, abs_tol=1e-9)]
        if off:
            raise ValueError(f"the results file's {', '.join(off)} of {key} at CFG {cfg:g} differ from its own samples' "
                             "(edited by hand?); measure again with the command in its error message")
    return table


def live_check(name: str, stored: dict, p: dict, cfg: float, keys: list[str], device: str = "cpu") -> pd.DataFrame:
    """Re-samples the first :data:`LIVE_SAMPLES` of each of ``keys`` at ``cfg`` and compares them with the stored
    8-bit images and cell reads; raises when they differ beyond the tolerances (a stale or edited file)."""
    bundle, reader = load(name, device=device), classifier.load_classifier(device)
    labels = balanced_labels(bundle.num_classes, p["num_samples"])[:LIVE_SAMPLES]
    by_key = {setting["key"]: setting for setting in settings(bundle, p)}
    rows = []
    for key in keys:
        images = sample_setting(bundle, by_key[key], labels, cfg, p["seed"], p, resolve_autocast(p["autocast"], device))
        off = np.abs(to_8bit(images).astype(int) - stored["arrays"][f"{cfg:g}/{key}/live"].astype(int))
        same = composite.read_cells(reader, images).numpy() == stored["arrays"][f"{cfg:g}/{key}/reads"][:LIVE_SAMPLES]
        rows.append({"model": name, "setting": key, "cfg": cfg, "pixels off by 1": float((off == 1).mean()),
                     "pixels off by more": float((off > 1).mean()), "cells read alike": float(same.mean())})
    checks = pd.DataFrame(rows)
    bad = checks[(checks["pixels off by more"] > 0) | (checks["pixels off by 1"] > LIVE_LEVEL_SHARE)
                 | (checks["cells read alike"] < LIVE_READ_AGREEMENT)]
    if len(bad):
        raise ValueError(f"the live subset of {name} differs from its results file ({', '.join(bad['setting'])}): the "
                         f"file is stale or edited; measure again with `{command(name)}`")
    return checks


def floors(table: pd.DataFrame) -> pd.Series:
    """The equivalence bar at each CFG scale: the larger |end| of the unpruned-vs-next-noise interval."""
    rows = table.xs("unpruned-noise", level="key")
    return np.maximum(rows["low"].abs(), rows["high"].abs())


def interval(row: pd.Series) -> str:
    return pruning.interval_text(row["ΔCFD"], row["low"], row["high"])


def smallest_destroying_k(table: pd.DataFrame, cfg: float, kind: str = "recomputed") -> int | None:
    """The smallest head k whose CFD ratio reaches :data:`DESTROYED_RATIO` (None: no k of the sweep does)."""
    rows = table.loc[cfg]
    ks = sorted(int(k) for k in rows["k"].dropna().unique())
    return next((k for k in ks if rows.loc[f"head-{k}-{kind}", "ratio"] >= DESTROYED_RATIO), None)


# ---------------------------------------------------------------------------------------------------
#                                        The claims, judged
# ---------------------------------------------------------------------------------------------------


def _worst(tables: dict[str, pd.DataFrame], cfg: float, measure, pick=max) -> tuple[float, str]:
    """The worst (``pick``: largest) of ``measure(rows at cfg, floor)`` over the seeds, and each seed's text."""
    values, texts = [], []
    for name, table in tables.items():
        value, text = measure(table.loc[cfg], floors(table)[cfg])
        values.append(value)
        texts.append(f"{name.rsplit('-', 1)[-1]}: {text}")
    return pick(values), "; ".join(texts)


def _within(key: str):
    def measure(rows, floor):
        row = rows.loc[key]
        return max(abs(row["low"]), abs(row["high"])) / floor, f"{interval(row)} vs ±{floor:.2f}"
    return measure


def _less_than(key: str, control: str):
    def measure(rows, floor):  # > 0 when the key's interval lies wholly below the control's
        return rows.loc[key, "high"] - rows.loc[control, "low"], f"{interval(rows.loc[key])} vs {interval(rows.loc[control])}"
    return measure


def _ratio_at_least(key: str):
    def measure(rows, floor):  # the smallest ratio over seeds, negated so that _worst's max picks it
        return -rows.loc[key, "ratio"], f"×{rows.loc[key, 'ratio']:.2f}"
    return measure


def cfg_claims(tables: dict[str, pd.DataFrame], cfg: float, head_k: int, requires: list[dict]) -> list[dict]:
    """The claims at one CFG scale, each holding for the recipe when it holds on every seed in ``tables``."""
    at = f" (CFG {cfg:g})"
    labels = next(iter(tables.values())).loc[cfg, "setting"]
    sees, sees_text = _worst(tables, cfg, _within("tail-random-energy"), pick=min)  # every seed: |end| / floor > 1
    sees_harm = report.precondition_row(
        f"the test sees harm: {labels['tail-random-energy']} is not within the floor{at}", paper="(our bar)",
        ours=sees_text, value=sees, op=">", bar=1.0)
    harm_requires = [*requires, sees_harm]
    rows = [sees_harm]
    for key, schedule in (("tail-every", "every"), ("tail-first", "first"), ("tail-last", "last")):
        worst, text = _worst(tables, cfg, _within(key))
        rows.append(report.claim_row(f"{labels[key]}: harmless{at}", paper=pruning.paper_fid("tail", 0.01, schedule),
                                     ours=text, value=worst, op="<=", bar=1.0, requires=harm_requires))
    for control in ("tail-random-count", "tail-random-energy"):
        worst, text = _worst(tables, cfg, _less_than("tail-every", control))
        rows.append(report.claim_row(f"pruning the tail harms less than pruning {labels[control]}{at}",
                                     paper="(implied by §5)", ours=text, value=-worst, op=">", bar=0.0,
                                     requires=requires))
    key = f"head-{head_k}-recomputed"
    worst, text = _worst(tables, cfg, _ratio_at_least(key))
    rows.append(report.claim_row(f"{labels[key]} (the paper's {max(_HEAD)} of 1152 by share): destroys generation{at}",
                                 paper=pruning.paper_fid("head", 1.0, "every"), ours=f"CFD {text}", value=-worst, op=">=",
                                 bar=DESTROYED_RATIO, requires=requires))
    worst, text = _worst(tables, cfg, _less_than(f"head-{head_k}-random-energy", key))
    rows.append(report.claim_row(f"pruning the head harms more than pruning {labels[f'head-{head_k}-random-energy']}{at}",
                                 paper="(implied by §5)", ours=text, value=-worst, op=">", bar=0.0, requires=requires))
    return rows


def claims(tables: dict[str, pd.DataFrame], hidden_size: int, requires: list[dict]) -> list[dict]:
    """Every verdict row of the in-regime study on the seeds in ``tables`` (name → :func:`results_table`), at each
    CFG scale, after the regime preconditions ``requires`` (:func:`regime.precondition_rows`)."""
    head_k = head_k_of_share(PAPER_HEAD_SHARES[max(_HEAD)], hidden_size)
    scales = next(iter(tables.values())).index.get_level_values("cfg").unique()
    return [*requires, *(row for cfg in scales for row in cfg_claims(tables, cfg, head_k, requires))]



# ---------------------------------------------------------------------------------------------------
#                                     The chapter's tables and figures
# ---------------------------------------------------------------------------------------------------

LIVE_KEYS = ("unpruned", "tail-every", "tail-random-energy")  # re-sampled by the chapter at the first CFG scale


def judged_seeds(replicates: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the in-regime replicates with a results file, those in the regime still to be measured)."""
    inside = list(replicates.index[replicates["in regime"]])
    return [n for n in inside if results_path(n).is_file()], [n for n in inside if not results_path(n).is_file()]


def worst_statistics(replicates: pd.DataFrame, names: list[str]) -> pd.Series:
    """The judged seeds' largest nPR(c) and smallest cos(y): the regime preconditions hold for all when for these."""
    rows = replicates.loc[names]
    return pd.Series({"npr_c": rows["npr_c"].max(), "cos_y": rows["cos_y"].min()})


def seed_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every setting of every seed at every CFG scale: share removed, ‖c‖² share, CFD, ΔCFD [95%], ratio, floor,
    agreement, cells read as unpruned and mean |Δ pixel|."""
    shown = []
    for name, table in tables.items():
        rows = table.reset_index()
        rows.insert(0, "seed", name.rsplit("-", 1)[-1])
        rows["ΔCFD [95%]"] = [interval(row) for _, row in rows.iterrows()]
        rows["floor"] = rows["cfg"].map(floors(table))
        shown.append(rows)
    columns = ["seed", "cfg", "setting", "removed", "energy", "CFD", "ΔCFD [95%]", "floor", "ratio", "per_digit",
               "cells kept", "mean |Δ pixel|"]
    return pd.concat(shown)[columns].set_index(["seed", "cfg", "setting"])


def equivalence_figure(tables: dict[str, pd.DataFrame], keys=("tail-every", "tail-first", "tail-last",
                                                              "tail-random-energy", "head-1-random-count")):
    """Each tail setting's ΔCFD interval and its controls', one panel per CFG scale, one colour per seed, with each
    seed's ± floor shaded: harmless means inside the shade."""
    scales = list(next(iter(tables.values())).index.get_level_values("cfg").unique())
    fig, axes = plt.subplots(1, len(scales), figsize=(6 * len(scales), 0.5 * len(keys) + 1.6), squeeze=False)
    for ax, cfg in zip(axes[0], scales):
        for index, (name, table) in enumerate(tables.items()):
            rows, floor = table.loc[cfg].loc[list(keys)], floors(table)[cfg]
            y = np.arange(len(keys)) + (index - (len(tables) - 1) / 2) * 0.2
            ax.errorbar(rows["ΔCFD"], y, xerr=[rows["ΔCFD"] - rows["low"], rows["high"] - rows["ΔCFD"]], fmt="o",
                        capsize=3, color=f"C{index}", label=name.rsplit("/", 1)[-1])
            ax.axvspan(-floor, floor, color=f"C{index}", alpha=0.08)
        ax.axvline(0, color="0.5", linewidth=0.8)
        ax.set_yticks(range(len(keys)), next(iter(tables.values())).loc[cfg].loc[list(keys), "setting"], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="ΔCFD against unpruned, same noise (95%)", title=f"CFG {cfg:g}")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def head_sweep_figure(tables: dict[str, pd.DataFrame]):
    """CFD ratio (pruned / unpruned) against the head count k, fixed at t₀ and recomputed, beside both random
    controls, with the destroyed bar and the paper's two head rows mapped by share of D."""
    scales = list(next(iter(tables.values())).index.get_level_values("cfg").unique())
    fig, axes = plt.subplots(1, len(scales), figsize=(6 * len(scales), 3.6), squeeze=False, sharey=True)
    styles = {"fixed": "o-", "recomputed": "s-", "random-count": "x:", "random-energy": "d--"}
    for ax, cfg in zip(axes[0], scales):
        for index, (name, table) in enumerate(tables.items()):
            rows = table.loc[cfg]
            ks = sorted(int(k) for k in rows["k"].dropna().unique())
            for kind, style in styles.items():
                ax.plot(ks, [rows.loc[f"head-{k}-{kind}", "ratio"] for k in ks], style, color=f"C{index}",
                        alpha=0.9 if kind in ("fixed", "recomputed") else 0.5,
                        label=f"{name.rsplit('-', 1)[-1]} {kind}")
        ax.axhline(DESTROYED_RATIO, color="C3", linestyle="--", linewidth=1, label="destroyed bar")
        ax.set(xscale="log", yscale="log", xlabel="head coordinates removed (k)", title=f"CFG {cfg:g}")
    axes[0, 0].set_ylabel("CFD pruned / unpruned")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def sample_grid(stored: dict, cfg: float, keys: list[str], labels: dict[str, str], count: int = 8):
    """The first ``count`` stored samples of each setting (rows) at ``cfg``, from the same noise."""
    fig, axes = plt.subplots(len(keys), 1, figsize=(count * 0.9, len(keys) * 1.0), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        images = stored["arrays"][f"{cfg:g}/{key}/live"][:count, 0]  # (count, H, W) uint8
        ax.imshow(np.concatenate(list(images), axis=1), cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(labels[key], fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def destroying_sentence(tables: dict[str, pd.DataFrame]) -> str:
    """Per seed and CFG scale: the smallest head k that destroys generation, recomputed every step and fixed."""
    parts = []
    for name, table in tables.items():
        for cfg in table.index.get_level_values("cfg").unique():
            found = {kind: smallest_destroying_k(table, cfg, kind) for kind in ("recomputed", "fixed")}
            parts.append(f"{name.rsplit('-', 1)[-1]} at CFG {cfg:g}: " + ", ".join(
                f"{kind} k = {k}" if k else f"{kind}: no k of the sweep" for kind, k in found.items()))
    return "; ".join(parts)

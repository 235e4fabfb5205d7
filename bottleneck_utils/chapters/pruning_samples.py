"""The pruning chapter's settings sampled elsewhere: one ``.npz`` per run, written under ``torchrun``.

At FID-5K on ImageNet the pruning chapter's sweep (22 settings and 4 noise seeds of the unpruned model) takes
hours in one process. With the notebook parameter ``samples_dir`` set, the chapter reads every run from
``samples_dir`` instead of sampling it:

1. Execute the chapter once with ``samples_dir=DIR``: it writes ``DIR/plan.json`` (the model and the chapter's
   resolved parameters) and stops with one line naming the command of step 2.
2. Sample every run of the plan, sharded across GPUs (rank 0 merges each run's shards into one file)::

       torchrun --nproc_per_node=8 -m bottleneck_utils.chapters.pruning_samples DIR

   It builds the masks and settings with the chapter's own code (``pruning.chapter_masks``,
   ``pruning.chapter_settings``), skips the runs already written, and writes each run's ``.npz`` atomically:
   ``arr_0`` (8-bit images, the ADM evaluator's layout), ``labels``, ``indices``, the run's
   :func:`sampling.sampler_card` and its identity (:func:`run_identity`: model sha256, setting, mask, schedule,
   noise seed).
3. Execute the chapter again with the same parameters: it reads each file (:func:`read_run`) after checking its card,
   identity and labels against what it would have sampled, and scores the 8-bit images.

A plan made with other parameters, or a file sampled with another model, mask, sampler or labels, is refused in one
line and never overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from bottleneck_utils import integrity
from bottleneck_utils.chapters import pruning
from bottleneck_utils.images import write_atomically
from bottleneck_utils.masks import Mask, Schedule
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.sampling import balanced_labels, sample_sharded, sampler_card, torchrun_rank

PLAN = "plan.json"
# The chapter's parameters that decide what a run samples (pruning.resolve's values), kept in the plan
PLAN_KEYS = ("model", "device", "dtype", "autocast", "seed", "n_samples", "num_steps", "cfg_scale", "tail_fractions",
             "head_fractions", "tail_energy_shares", "taus", "schedules", "k", "head_schedules", "control_schedules",
             "granularity", "null_policy", "noise_seeds")
COMMAND = "torchrun --nproc_per_node=NGPU -m bottleneck_utils.chapters.pruning_samples"

# ---------------------------------------------------------------------------------------------------
#                                       The plan and the runs' files
# ---------------------------------------------------------------------------------------------------


def write_plan(samples_dir: str | Path, parameters: dict) -> Path:
    """Writes ``samples_dir/plan.json`` (the :data:`PLAN_KEYS` of the chapter's resolved parameters,
    :func:`pruning.resolve`), or checks that the plan already there is the same.

    Raises:
        ValueError: parameters without every :data:`PLAN_KEYS`, or a folder holding a plan made with other
            parameters (it is kept; the differing keys are named); nothing is written then.
    """
    missing = [key for key in PLAN_KEYS if key not in parameters]
    if missing:
        raise ValueError(f"the plan needs the chapter's resolved parameters (pruning.resolve); missing: "
                         f"{', '.join(missing)}")
    path = Path(samples_dir) / PLAN
    plan = json.loads(json.dumps({key: parameters[key] for key in PLAN_KEYS}))  # as read back: tuples are lists
    if path.is_file():
        stored = integrity.read_json(path, "the pruning samples' plan", f"delete {samples_dir} and plan again")
        differ = sorted(key for key in plan.keys() | stored.keys() if plan.get(key) != stored.get(key))
        if differ:
            raise ValueError(f"{path} was planned with other parameters ({', '.join(differ)}): use another "
                             f"samples_dir, or delete {samples_dir} to sample again")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(plan, indent=2) + "\n"))
    return path


def read_plan(samples_dir: str | Path) -> dict:
    """The parameters of ``samples_dir/plan.json`` (one line naming the fix when it is missing or damaged)."""
    path = Path(samples_dir) / PLAN
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: execute the pruning chapter with samples_dir={samples_dir} "
                                "first, which writes it")
    return integrity.read_json(path, "the pruning samples' plan", f"delete {samples_dir} and plan again")


def run_names(settings: dict, noise_seeds: list[int]) -> list[str]:
    """Every run of ``pruning.chapter_runs``: each setting, then the unpruned model at each noise seed."""
    return [*settings, *(pruning.noise_run(seed) for seed in noise_seeds)]


def run_file(samples_dir: str | Path, name: str) -> Path:
    """The ``.npz`` of the run ``name``: its ASCII letters, digits, dots and percent signs (the rest as ``-``) and
    the first 8 hex digits of its sha256, which tell apart names that differ only in other characters (tᵢ, t₀)."""
    slug = re.sub(r"[^A-Za-z0-9.%]+", "-", name).strip("-")
    return Path(samples_dir) / f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.npz"


def run_identity(bundle: Bundle, name: str, mask: Mask | None, schedule: Schedule | None, noise_seed: int,
                 null_policy: str) -> dict:
    """What makes a run this run beyond its sampler card: the model's sha256, the run's name, the mask (its name,
    whether recomputed, the sha256 of its coordinates), the schedule, the null-branch policy and the noise seed."""
    mask_id = None if mask is None else {
        "name": mask.name, "recompute": mask.recompute,
        "removed_sha256": hashlib.sha256(mask.removed.cpu().numpy().tobytes()).hexdigest()}
    return {"run": name, "model_sha256": bundle.sha256, "mask": mask_id,
            "schedule": None if schedule is None else schedule.label, "null_policy": null_policy,
            "noise_seed": noise_seed}


def missing_runs(samples_dir: str | Path, names: list[str]) -> list[str]:
    return [name for name in names if not run_file(samples_dir, name).is_file()]


def read_run(path: Path, card: dict, identity: dict, labels: torch.Tensor) -> torch.Tensor:
    """The images of one run's ``.npz`` as (N, C, H, W) floats in [0, 1], after checking that it holds what the
    chapter would have sampled: the same sampler ``card``, run ``identity`` and ``labels``, every index once.

    Raises:
        ValueError: a damaged file, or one sampled otherwise (what differs is named); the file is kept.
    """
    fix = f"delete it and sample it again ({COMMAND} {path.parent})"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("arr_0", "labels", "indices", "sampler_card", "run")}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a complete run file ({type(error).__name__}): {fix}") from None
    stored = {"sampler card": json.loads(str(arrays["sampler_card"])), "run": json.loads(str(arrays["run"]))}
    for what, expected in (("sampler card", card), ("run", identity)):
        differ = sorted(key for key in expected.keys() | stored[what].keys()
                        if expected.get(key) != stored[what].get(key))
        if differ:
            raise ValueError(f"{path} was sampled with another {what} ({', '.join(differ)} differ): {fix}")
    if (not np.array_equal(arrays["labels"], labels.cpu().numpy())
            or not np.array_equal(arrays["indices"], np.arange(len(labels)))):
        raise ValueError(f"{path} holds other labels or samples than the chapter's {len(labels)}: {fix}")
    return torch.from_numpy(arrays["arr_0"]).permute(0, 3, 1, 2).float() / 255


def reader(bundle: Bundle, settings: dict, labels: torch.Tensor, p: dict):
    """``read(name, mask, schedule, noise_seed)`` → the images of that run from ``p["samples_dir"]``
    (:func:`read_run`), once the folder's plan is written or checked (:func:`write_plan`) and every run of
    ``settings`` and ``p["noise_seeds"]`` is there; None when ``samples_dir`` is empty (the chapter samples).

    Raises:
        FileNotFoundError: runs are missing; the line names the command that samples them.
        ValueError: the folder was planned with other parameters.
    """
    samples_dir = p["samples_dir"]
    if not samples_dir:
        return None
    write_plan(samples_dir, p)
    missing = missing_runs(samples_dir, run_names(settings, p["noise_seeds"]))
    if missing:
        raise FileNotFoundError(f"{len(missing)} runs are not sampled in {samples_dir} yet (e.g. {missing[0]!r}): "
                                f"run `{COMMAND} {samples_dir}`")
    card = sampler_card(bundle, num_samples=len(labels), num_steps=p["num_steps"], cfg_scale=p["cfg_scale"],
                        autocast=p["autocast"])

    def read(name: str, mask: Mask | None, schedule: Schedule | None, noise_seed: int) -> torch.Tensor:
        identity = run_identity(bundle, name, mask, schedule, noise_seed, p["null_policy"])
        return read_run(run_file(samples_dir, name), card, identity, labels)

    return read


# ---------------------------------------------------------------------------------------------------
#                                          Command line (torchrun)
# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``DIR [--device D] [--batch-size B]``: samples every run of ``DIR/plan.json`` not written yet."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples_dir")
    parser.add_argument("--device", default=None, help="default: the plan's (cuda: each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per forward on each rank")
    args = parser.parse_args(argv)
    try:
        p = read_plan(args.samples_dir)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    with torchrun_rank(args.device or p["device"]) as device:
        bundle = load(p["model"], device=device, dtype=p["dtype"])
        settings, _, _ = pruning.chapter_settings(pruning.chapter_masks(bundle, p), p)
        labels = balanced_labels(bundle.num_classes, p["n_samples"])
        card = sampler_card(bundle, num_samples=p["n_samples"], num_steps=p["num_steps"], cfg_scale=p["cfg_scale"],
                            autocast=p["autocast"])
        runs = {**{name: (mask, schedule, p["seed"]) for name, (_, mask, schedule) in settings.items()},
                **{pruning.noise_run(seed): (None, None, seed) for seed in p["noise_seeds"]}}
        for name in missing_runs(args.samples_dir, list(runs)):
            mask, schedule, noise_seed = runs[name]
            print(f"sampling {name}", flush=True)
            sample_sharded(bundle, labels, npz_path=run_file(args.samples_dir, name), card=card,
                           run=run_identity(bundle, name, mask, schedule, noise_seed, p["null_policy"]),
                           num_steps=p["num_steps"], cfg_scale=p["cfg_scale"], seed=noise_seed,
                           batch_size=args.batch_size, mask=mask, schedule=schedule or "every",
                           null_policy=p["null_policy"], autocast=p["autocast"])


if __name__ == "__main__":
    main()

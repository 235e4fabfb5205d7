"""The organisms' command lines: train one organism, or the ladder's rungs and the beyond variants as registries.

    python -m bottleneck_utils.organisms.cli organism mnist-classifier --install  # the 14×14 MNIST classifier (~1 CPU min)
    python -m bottleneck_utils.organisms.cli organism mnist-dit --install   # the class-conditional DiT (~20 CPU minutes)
    python -m bottleneck_utils.organisms.cli organism mnist-sit --install   # the same in SiT's flow convention
    python -m bottleneck_utils.organisms.cli organism mnist-unet --install  # the same on a U-Net (~2× mnist-dit's time)
    python -m bottleneck_utils.organisms.cli organism ising-dit --install   # the temperature-conditional DiT (~70 CPU min)
    python -m bottleneck_utils.organisms.cli organism ladder/c1000          # one rung's (or variant's) training alone

    python -m bottleneck_utils.organisms.cli ladder train [RUNG ...]    # train, measure and ship rungs one after another
                                                                      # (default: every rung not shipped yet)
    python -m bottleneck_utils.organisms.cli ladder finish [RUNG ...]   # measure and ship rungs whose training ended
    python -m bottleneck_utils.organisms.cli ladder status [RUNG ...]   # shipped, training (last logged step) or pending
    python -m bottleneck_utils.organisms.cli beyond train|finish|status [VARIANT ...]   # the same for the variants
    python -m bottleneck_utils.organisms.cli regime train|finish|status [NAME ...]      # the in-regime recipe's seed
                                                                      # replicates (recipes.REGIME), each its own seed
    python -m bottleneck_utils.organisms.cli regime train regime/d256-p6-b64-s0 --threads 2 --install
                                                                      # rebuild a shipped one, replaced after success

``organism NAME`` trains into ``--out`` (default ``runs/NAME``), resuming from its ``state.pt``, and ``--install``
replaces the shipped checkpoint only after training has ended. Only a run of the registry's recipe, seed 0 and all
its steps ships (:func:`train.check_run`): a shorter one (a smoke run) only with ``--install-short`` (``organism`` and
``ladder|beyond finish``); the new folder and the manifest are swapped in together or not at all (:func:`train.ship`).
Every refusal is one line naming the fix. The registries train with ``--threads`` torch threads
(default 1) on ``--device``, and measure quality there: a ladder rung's composite-digit agreement
(:func:`quality.composite_quality`), a variant's MNIST agreement (:func:`quality.mnist_quality`), written to
``quality.json``. A rung below the bar is shipped and reported as below it. Every rung ships its log and embedder; the
rungs in ``recipes.WEIGHTS_SHIPPED`` and every variant ship full weights for the pruning runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from bottleneck_utils.images import write_atomically
from bottleneck_utils.models import load, resolve_device
from bottleneck_utils.organisms import classifier, data, quality, recipes, train

COMMAND = "python -m bottleneck_utils.organisms.cli"

# ---------------------------------------------------------------------------------------------------
#                                   Measuring and shipping a finished run
# ---------------------------------------------------------------------------------------------------

def finish_run(name: str, measure, weights: bool, command: str, device: str = "cpu", allow_short: bool = False) -> dict:
    """Measures the finished run ``runs/NAME`` on ``device`` (``measure(bundle)`` → a quality record, to which the
    device is added), writes its ``quality.json`` and installs it (with its weights, or its embedder only);
    ``command`` trains it, for the error message.

    The run is checked (:func:`train.check_run`: the registry's recipe, seed and steps; fewer steps only with
    ``allow_short``) before it is measured; a refused run raises :class:`train.RunError` in one line.
    """
    out_dir = Path("runs") / name
    if not (out_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{out_dir} has no saved model: train it first ({command} train {name})")
    train.check_run(out_dir, name, allow_short)
    quality = measure(load(str(out_dir), device=device)) | {"device": str(device)}
    write_atomically(out_dir / "quality.json", lambda t: t.write_text(json.dumps(quality, indent=2) + "\n"))
    train.install(out_dir, name, weights=weights, allow_short=allow_short)
    return quality


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage stays behind ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@contextmanager
def terminate_as_exit():
    """Turns SIGTERM into SystemExit while inside, so ``finally`` blocks run (temporary files removed, child
    processes ended) when a job is stopped; the previous handler is restored after."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def registry_main(argv: list[str] | None, description: str, registry: dict, source_of, finish, describe) -> None:
    """The command line of a registry of recipes (the ladder's rungs, the beyond variants).

    ``train [NAME ...]`` trains each named recipe into ``runs/NAME``, resuming from its state, saves it and calls
    ``finish(NAME)`` (measure and ship); without names it takes every recipe not shipped yet, in registry order.
    ``finish [NAME ...]`` only finishes; ``status [NAME ...]`` prints where each recipe stands.
    ``source_of(NAME)`` gives a recipe's data source; ``describe(NAME, quality)`` the line printed after each.
    """
    parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "finish", "status"])
    parser.add_argument("names", nargs="*", help="which recipes (default: train the unshipped ones, else all)")
    parser.add_argument("--device", default="cpu", help="where to train (cuda for the largest rungs)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (1 when jobs run side by side; all cores for one wide rung alone)")
    parser.add_argument("--install-short", action="store_true",
                        help="finish: ship a run shorter than its recipe (a smoke run) all the same")
    parser.add_argument("--install", action="store_true",
                        help="train: retrain a shipped recipe and replace it once its run is finished and measured")
    args = parser.parse_intermixed_args(argv)
    unknown = sorted(set(args.names) - set(registry))
    if unknown:
        parser.error(f"unknown names {unknown}; choose from {sorted(registry)}")
    shipped = [name for name in args.names if args.command == "train" and shipped_quality(name)]
    if shipped and not args.install:
        parser.error(f"{shipped} shipped already: add --install to retrain and replace it after the run succeeds, "
                     f"or train a copy beside it ({COMMAND} organism NAME --out DIR)")
    names = args.names or [name for name in registry if args.command != "train" or not shipped_quality(name)]
    if not names:
        print(f"every recipe of this registry is shipped: name one and add --install to retrain and replace it "
              f"({', '.join(registry)})")
        return
    if args.command == "status":
        for name in names:
            print(recipe_status(name, registry[name], describe))
        return
    try:
        resolve_device(args.device)  # a one-line error before any work when the device is not there
    except RuntimeError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    train.allow_tf32_on_cuda(args.device)
    for name in names:
        recipe, out_dir = registry[name], Path("runs") / name
        if args.command == "train":
            seed = recipes.seed_of(name)
            ema = train.train_dit(recipe, source_of(name), recipe.steps, seed, out_dir, device=args.device)
            train.save_run(out_dir, ema, recipe, recipe.steps, seed)
        print(f"{describe(name, finish(name, args.device, args.install_short))}; installed")


def shipped_quality(name: str) -> dict | None:
    """The quality record of a recipe installed in the package data, or None when it is not shipped."""
    path = train.CHECKPOINT_DIR / name / "quality.json"
    return quality.read_record(path, name) if path.is_file() else None


def recipe_status(name: str, recipe: dict, describe) -> str:
    """One line: shipped (with ``describe``'s summary), training (the last logged step in ``runs/NAME``), or not
    started."""
    quality = shipped_quality(name)
    if quality is not None:
        return f"shipped   {describe(name, quality)}"
    log = Path("runs") / name / "train_log.csv"
    if log.is_file():
        fix = f"train {name} again to rewrite it (it resumes from its state.pt), or delete {log.parent}"
        step = int(train.read_log(log, fix)["step"].iloc[-1])
        return f"training  {name}: logged to step {step:,} of {recipe.steps:,} in {log.parent}"
    return f"pending   {name}: not started ({recipe.steps:,} steps)"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def organism_parser() -> argparse.ArgumentParser:
    """The arguments of ``organism NAME``."""
    parser = Parser(prog=f"{COMMAND} organism", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"{', '.join(sorted(recipes.ORGANISMS))}, mnist-classifier, a ladder rung or a "
                                     "beyond variant")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/NAME); resumes from it")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="default: the name's (0, or a regime replicate's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--install", action="store_true", help="replace the shipped checkpoint when training ends")
    parser.add_argument("--install-short", action="store_true",
                        help="--install even a run shorter than its recipe (a smoke run)")
    return parser


def refuse_install(parser: argparse.ArgumentParser, args: argparse.Namespace, steps: int, recipe_steps: int) -> None:
    """Exits in one line, before any training, when ``--install`` could not ship the run asked for: another seed
    than the name's (:func:`recipes.seed_of`), more steps than the recipe's, or fewer without ``--install-short``."""
    if args.seed != recipes.seed_of(args.name):
        parser.error(f"{args.name} ships with seed {recipes.seed_of(args.name)}, got --seed {args.seed}: drop --seed "
                     "or --install")
    if steps > recipe_steps:
        parser.error(f"--steps {steps:,} is more than the recipe's {recipe_steps:,}: drop --steps or --install")
    if steps < recipe_steps and not args.install_short:
        parser.error(f"--steps {steps:,} of the recipe's {recipe_steps:,} is a smoke run: drop --install, or ship it "
                     "anyway with --install-short")


def classifier_main(parser: argparse.ArgumentParser, args: argparse.Namespace, out_dir: Path) -> None:
    """``organism mnist-classifier``: trains the classifier into ``out_dir`` and, with ``--install``, ships it."""
    if args.steps is not None:
        parser.error("mnist-classifier trains for a fixed number of epochs: drop --steps")
    install = args.install or args.install_short
    if install:
        refuse_install(parser, args, 0, 0)
    images, labels = data.load_mnist("train")
    model = classifier.train_classifier(classifier.downsample(images), torch.as_tensor(labels), seed=args.seed)
    test_images, test_labels = data.load_mnist("test")
    probs = classifier.predict(model, classifier.downsample(test_images))
    print(f"test accuracy: {(probs.argmax(-1).numpy() == test_labels).mean():.4f}")
    weights = {key: value.contiguous() for key, value in model.state_dict().items()}
    write_atomically(out_dir / "model.safetensors", lambda temporary: save_file(weights, temporary))
    if install:
        sha = train.ship(out_dir, ["model.safetensors"], "mnist-classifier", "model.safetensors")
        print(f"installed mnist-classifier with sha256 {sha}")


def organism_main(argv: list[str] | None = None) -> None:
    """``organism NAME [--out DIR] [--steps N] [--seed S] [--device D] [--install | --install-short]``: one
    organism's training; an install that could not ship is refused before training (:func:`refuse_install`)."""
    parser = organism_parser()
    args = parser.parse_args(argv)
    args.seed = recipes.seed_of(args.name) if args.seed is None else args.seed
    out_dir = args.out or Path("runs") / args.name
    if args.name == "mnist-classifier":
        return classifier_main(parser, args, out_dir)
    try:
        recipe, source = train.organism(args.name)
    except ValueError as error:
        parser.error(str(error))
    steps = args.steps or recipe.steps
    if args.install or args.install_short:
        refuse_install(parser, args, steps, recipe.steps)
    train.allow_tf32_on_cuda(args.device)
    ema = train.train_dit(recipe, source, steps, args.seed, out_dir, device=args.device)
    train.save_run(out_dir, ema, recipe, steps, args.seed)
    print(f"saved {args.name} into {out_dir}")
    if args.name in recipes.MNIST_ORGANISMS:  # the quality bar, recorded beside the weights and shipped with them
        measured = quality.mnist_quality(load(str(out_dir)))
        write_atomically(out_dir / "quality.json", lambda t: t.write_text(json.dumps(measured, indent=2) + "\n"))
        print(f"quality: {measured['per_digit']:.1%} of samples read as the requested digit "
              f"at CFG {measured['best_cfg']:g}")
    if args.install or args.install_short:
        sha = train.install(out_dir, args.name, allow_short=args.install_short)
        print(f"installed {args.name} with sha256 {sha}")


def finish_rung(name: str, device: str = "cpu", allow_short: bool = False) -> dict:
    """Measures a finished ladder rung's (or regime replicate's) quality on ``device`` into ``quality.json`` and
    installs it (:func:`finish_run`; ``allow_short`` ships a smoke run). Regime replicates ship their weights."""
    recipe = recipes.recipe_of(name)
    registry = "regime" if name in recipes.REGIME else "ladder"
    return finish_run(name, lambda bundle: quality.composite_quality(
        bundle, recipe.classes, recipes.QUALITY_SAMPLES[recipe.classes], recipes.QUALITY_STEPS),
        name in recipes.WEIGHTS_SHIPPED or name in recipes.REGIME, f"{COMMAND} {registry}", device, allow_short)


def finish_variant(name: str, device: str = "cpu", allow_short: bool = False) -> dict:
    """Measures a finished beyond variant's quality on ``device`` into ``quality.json`` and installs it (weights
    included; :func:`finish_run`)."""
    return finish_run(name, lambda bundle: quality.mnist_quality(bundle, recipes.QUALITY_PER_CLASS,
                                                                 recipes.QUALITY_STEPS),
                      True, f"{COMMAND} beyond", device, allow_short)


def describe_rung(name: str, record: dict) -> str:
    return (f"{name}: per-digit {record['per_digit']:.1%}, all digits {record['all_digits']:.1%} "
            f"at CFG {record['best_cfg']:g}")


def describe_variant(name: str, record: dict) -> str:
    return f"{name}: {record['per_digit']:.1%} read as requested at CFG {record['best_cfg']:g}"


REGISTRIES = {"ladder": (recipes.RUNGS, finish_rung, describe_rung),
              "regime": (recipes.REGIME, finish_rung, describe_rung),
              "beyond": (recipes.VARIANTS, finish_variant, describe_variant)}


def cli(argv: list[str] | None = None) -> None:
    """``organism NAME ...``, ``ladder ...`` or ``beyond ...`` (see the module docstring).

    A refused or failed run (:class:`train.RunError`), a damaged or missing file exits with its one-line message; a SIGTERM
    exits through ``finally`` blocks, so no temporary file is left behind.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("organism", *REGISTRIES):
        sys.exit(f"usage: {COMMAND} organism NAME [...] | ladder|regime|beyond train|finish|status [NAME ...]\n\n"
                 f"{__doc__}")
    try:
        with terminate_as_exit():
            if argv[0] == "organism":
                return organism_main(argv[1:])
            registry, finish, describe = REGISTRIES[argv[0]]
            registry_main(argv[1:], __doc__, registry, lambda name: train.organism(name)[1], finish, describe)
    except (ValueError, FileNotFoundError) as error:  # a refused run (train.RunError) or a damaged file
        sys.exit(f"{COMMAND} {argv[0]}: error: {error}")


if __name__ == "__main__":
    cli()

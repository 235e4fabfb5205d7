"""Trains several ladder rungs side by side (one process each, e.g. on one GPU), then measures and ships them.

    python tools/train_side_by_side.py --device cuda --minutes 7 ladder/d256 ladder/d128-long ladder/d256-long

Each rung runs ``python -m bottleneck_utils.organisms.cli organism RUNG --device DEVICE`` (resumable from
``runs/RUNG``), its output in ``runs/RUNG/train.out``. A rung still training at the deadline is stopped; its last ``state.pt`` (at most
500 steps behind) stays, so the same command continues it. The finished rungs are then measured and shipped one
after another (``ladder finish``: they share one manifest). A small model's step is bound by kernel launches, not
by the GPU, so rungs side by side train about as fast as one alone.

``--steps N`` is a smoke run: the rungs train N steps and nothing is finished or shipped. Every argument is checked
before the first child starts, and the children are ended on any exit (an error, Ctrl-C, a SIGTERM): none is left
writing into ``runs/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from bottleneck_utils.models import resolve_device
from bottleneck_utils.organisms import recipes
from bottleneck_utils.organisms.cli import Parser, positive_int, terminate_as_exit

GRACE_SECONDS = 30.0  # how long a stopped child may take to exit before it is killed


def last_logged_step(name: str) -> int:
    """The last step in ``runs/NAME/train_log.csv`` (0 before the first row)."""
    log = Path("runs") / name / "train_log.csv"
    rows = list(csv.DictReader(log.open())) if log.is_file() else []
    return int(rows[-1]["step"]) if rows else 0


def stop(processes: dict[str, subprocess.Popen], grace: float = GRACE_SECONDS) -> set[str]:
    """Terminates every process still running, kills any still alive ``grace`` seconds later, and waits for each;
    returns the names of those stopped."""
    running = {name: process for name, process in processes.items() if process.poll() is None}
    for process in running.values():
        process.terminate()  # state.pt is written atomically, so a stop never leaves half a file
    deadline = time.monotonic() + grace
    for process in running.values():
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return set(running)


def run_side_by_side(commands: dict[str, list[str]], seconds: float, report_every: float, report,
                     threads: int = 1) -> dict[str, int | None]:
    """Starts every command at once and waits up to ``seconds``; commands still running then are stopped.

    ``report()`` is called every ``report_every`` seconds. Returns each name's exit status, None for stopped ones.
    On any exception (a failed start, a failing report, KeyboardInterrupt) every started command is ended first.
    """
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    processes = {}
    try:
        for name, command in commands.items():
            output = (Path("runs") / name).resolve()
            output.mkdir(parents=True, exist_ok=True)
            with (output / "train.out").open("a") as out:
                processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        start = next_report = time.monotonic()
        while any(p.poll() is None for p in processes.values()) and time.monotonic() - start < seconds:
            time.sleep(min(1.0, report_every))
            if time.monotonic() >= next_report:
                report()
                next_report += report_every
    finally:
        stopped = stop(processes)
    return {name: None if name in stopped else process.returncode for name, process in processes.items()}


def progress_line(names: list[str], started: float) -> str:
    """``rung step/total`` for each rung, with the mean rate since ``started``."""
    elapsed = max(time.monotonic() - started, 1e-9)
    steps = {name: last_logged_step(name) for name in names}
    return f"[{elapsed:5.0f} s] " + "  ".join(
        f"{name.split('/')[-1]} {steps[name]:,}/{recipes.RUNGS[name].steps:,} ({steps[name] / elapsed:.0f}/s)"
        for name in names)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, every one checked (rungs known and distinct, the device present) before anything starts."""
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="ladder rungs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=positive_float, required=True,
                        help="training deadline; then the finished are shipped")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per rung")
    parser.add_argument("--report-every", type=positive_float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="train only this many steps: a smoke run, nothing is shipped")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(recipes.RUNGS))
    if unknown:
        parser.error(f"unknown rungs {unknown}; choose from {sorted(recipes.RUNGS)}")
    repeated = sorted({name for name in args.names if args.names.count(name) > 1})
    if repeated:
        parser.error(f"rungs {repeated} are named twice (two processes would write one run folder); name each once")
    try:
        resolve_device(args.device)
    except RuntimeError as error:
        parser.error(str(error))
    return args


def finish(names: list[str], device: str) -> int:
    """Measures and ships the finished rungs (``ladder finish``, one after another); returns its exit status."""
    command = [sys.executable, "-m", "bottleneck_utils.organisms.cli", "ladder", "finish", "--device", device, *names]
    return subprocess.run(command, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Trains the rungs side by side up to the deadline, then ships those that finished (not after ``--steps``)."""
    args = parse(argv)
    steps = ["--steps", str(args.steps)] if args.steps else []
    commands = {name: [sys.executable, "-m", "bottleneck_utils.organisms.cli", "organism", name,
                       "--device", args.device, *steps] for name in args.names}
    started = time.monotonic()
    with terminate_as_exit():  # a SIGTERM ends the children too
        status = run_side_by_side(commands, 60 * args.minutes, args.report_every,
                                  lambda: print(progress_line(args.names, started), flush=True), args.threads)
        print(progress_line(args.names, started), flush=True)
        finished = [name for name, code in status.items() if code == 0]
        for name, code in status.items():
            if code != 0:
                print(f"{name}: {'stopped at the deadline' if code is None else f'failed (exit {code})'}; "
                      f"see runs/{name}/train.out")
        if args.steps:
            print(f"a smoke run (--steps {args.steps}): nothing finished or shipped")
        elif finished and finish(finished, args.device) != 0:
            return 1
    return 0 if len(finished) == len(status) else 1


if __name__ == "__main__":
    sys.exit(main())

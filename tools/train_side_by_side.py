"""Trains several ladder rungs side by side (one process each, e.g. on one GPU), then measures and ships them.

    python tools/train_side_by_side.py --device cuda --minutes 7 ladder/d256 ladder/d128-long ladder/d256-long

Each rung runs ``python -m bottleneck_utils.organisms.cli organism RUNG --device DEVICE`` (resumable from
``runs/RUNG``), its output in ``runs/RUNG/train.out``. A rung still training at the deadline is stopped; its last ``state.pt`` (at most
500 steps behind) stays, so the same command continues it. The finished rungs are then measured and shipped one
after another (``ladder finish``: they share one manifest). A small model's step is bound by kernel launches, not
by the GPU, so rungs side by side train about as fast as one alone.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from bottleneck_utils.organisms import recipes
from bottleneck_utils.organisms.cli import positive_int


def last_logged_step(name: str) -> int:
    """The last step in ``runs/NAME/train_log.csv`` (0 before the first row)."""
    log = Path("runs") / name / "train_log.csv"
    rows = list(csv.DictReader(log.open())) if log.is_file() else []
    return int(rows[-1]["step"]) if rows else 0


def run_side_by_side(commands: dict[str, list[str]], seconds: float, report_every: float, report,
                     threads: int = 1) -> dict[str, int | None]:
    """Starts every command at once and waits up to ``seconds``; commands still running then are stopped.

    ``report()`` is called every ``report_every`` seconds. Returns each name's exit status, None for stopped ones.
    """
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    outputs = {name: (Path("runs") / name).resolve() for name in commands}
    processes = {}
    for name, command in commands.items():
        outputs[name].mkdir(parents=True, exist_ok=True)
        with (outputs[name] / "train.out").open("a") as out:
            processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    start = next_report = time.monotonic()
    while any(p.poll() is None for p in processes.values()) and time.monotonic() - start < seconds:
        time.sleep(min(1.0, report_every))
        if time.monotonic() >= next_report:
            report()
            next_report += report_every
    for process in processes.values():
        if process.poll() is None:
            process.terminate()  # state.pt is written atomically, so a stop never leaves half a file
            process.wait()
            process.returncode = None
    return {name: process.returncode for name, process in processes.items()}


def progress_line(names: list[str], started: float) -> str:
    """``rung step/total`` for each rung, with the mean rate since ``started``."""
    elapsed = max(time.monotonic() - started, 1e-9)
    steps = {name: last_logged_step(name) for name in names}
    return f"[{elapsed:5.0f} s] " + "  ".join(
        f"{name.split('/')[-1]} {steps[name]:,}/{recipes.RUNGS[name].steps:,} ({steps[name] / elapsed:.0f}/s)"
        for name in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="ladder rungs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, required=True, help="training deadline; then the finished are shipped")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per rung")
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--steps", type=positive_int, default=None, help="train only this many steps (a smoke run)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(recipes.RUNGS))
    if unknown:
        parser.error(f"unknown rungs {unknown}; choose from {sorted(recipes.RUNGS)}")
    steps = ["--steps", str(args.steps)] if args.steps else []
    commands = {name: [sys.executable, "-m", "bottleneck_utils.organisms.cli", "organism", name, "--device", args.device, *steps]
                for name in args.names}
    started = time.monotonic()
    status = run_side_by_side(commands, 60 * args.minutes, args.report_every,
                              lambda: print(progress_line(args.names, started), flush=True), args.threads)
    print(progress_line(args.names, started), flush=True)
    finished = [name for name, code in status.items() if code == 0]
    for name, code in status.items():
        if code != 0:
            print(f"{name}: {'stopped at the deadline' if code is None else f'failed (exit {code})'}; "
                  f"see runs/{name}/train.out")
    if finished:
        subprocess.run([sys.executable, "-m", "bottleneck_utils.organisms.cli", "ladder", "finish", "--device", args.device,
                        *finished], check=True)
    return 0 if len(finished) == len(status) else 1


if __name__ == "__main__":
    sys.exit(main())

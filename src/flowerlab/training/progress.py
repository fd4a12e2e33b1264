"""`flowerlab status`: how far each training of a run is, without opening its log.

    flowerlab status                      # the trainings under results/ of this folder
    flowerlab status --results other/results

Every training writes `progress.json` into its checkpoint folder
(`results/checkpoints/{arch}/{replicate}/`) at the end of each epoch, atomically: the epoch, the
epochs in all, its images/s, the time it expects to need still, when, and which process (host and
pid). A finished training removes its checkpoint folder, and with it that file, and has its
`training.json`. So `status` lists each training as

    running   convnet/seed-1   epoch 7/20, 31 img/s, about 12 min left (2 s ago)
    stopped   squeezenet/seed-1  epoch 12/35, ... : its process is gone; rerunning the workflow resumes it
    done      dense/seed-1     10 epochs, 2 min 30 s

A Snakemake job's output goes to its log, which a terminal does not show; this is the view of
the trainings that the terminal lacks. No TensorFlow here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerlab import filesystem
from flowerlab.console import configure_logging, duration, run_command
from flowerlab.errors import DataError
from flowerlab.filesystem import pid_alive

PROGRESS_FILE = "progress.json"
RECORD_FILE = "training.json"  # flowerlab.training.records writes it; read here as JSON only


def write_progress(checkpoint_dir: str | os.PathLike[str], *, epoch: int, epochs: int, line: str,
                   images_per_second: float | None, seconds_left: float | None) -> Path:
    """The training's progress after `epoch`, for `flowerlab status` (atomically replaced)."""
    path = Path(checkpoint_dir) / PROGRESS_FILE
    filesystem.write_json(path, filesystem.json_safe({  # a diverged epoch's NaN rate is null, not a crash
        "epoch": int(epoch), "epochs": int(epochs), "line": line, "images_per_second": images_per_second,
        "seconds_left": seconds_left, "updated": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
    }))
    return path


def remove_progress(checkpoint_dir: str | os.PathLike[str]) -> None:
    (Path(checkpoint_dir) / PROGRESS_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class Training:
    """One training as `status` shows it."""

    run: str  # "convnet/seed-1"
    state: str  # running, stopped, done
    text: str


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def in_progress(progress: Mapping[str, Any], run: str, now: float) -> Training:
    """A training with a progress file: running, or stopped when its process is gone from this host."""
    age = now - float(progress.get("updated", now))
    where = f"epoch {progress['epoch']}/{progress['epochs']}"
    speed = f", {progress['images_per_second']:.0f} img/s" if progress.get("images_per_second") else ""
    gone = progress.get("host") == socket.gethostname() and not pid_alive(int(progress.get("pid", -1)))
    if gone:
        return Training(run, "stopped", f"{where} done{speed} ({_ago(age)}); its process is gone: rerunning the "
                                        "workflow resumes it from its checkpoint")
    left = progress.get("seconds_left")
    remaining = f", about {duration(left)} left" if left else ""
    host = "" if progress.get("host") == socket.gethostname() else f" on {progress.get('host')}"
    return Training(run, "running", f"{where} done{speed}{remaining} (updated {_ago(age)}{host})")


def trainings(results: Path, now: float | None = None) -> list[Training]:
    """Every training under `results`: those in progress (a progress file in its checkpoint
    folder), then those done (a training.json), each sorted by architecture and replicate."""
    now = time.time() if now is None else now
    if not results.is_dir():
        raise DataError(f"{results} not found: run the workflow from the folder that holds results/, "
                        "or give --results")
    found: dict[str, Training] = {}
    for path in sorted(results.glob(f"checkpoints/*/*/{PROGRESS_FILE}")):
        run = f"{path.parent.parent.name}/{path.parent.name}"
        found[run] = in_progress(filesystem.read_json(path, "training progress"), run, now)
    for path in sorted(results.glob(f"models/*/*/{RECORD_FILE}")):
        run = f"{path.parent.parent.name}/{path.parent.name}"
        if run in found:  # a newer training of the same run is under way
            continue
        record = filesystem.read_json(path, "training record")
        when = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        epochs = record.get("epochs")
        found[run] = Training(run, "done", f"{epochs} epoch{'' if epochs == 1 else 's'} in "
                                           f"{duration(record.get('wall_seconds') or 0)} (finished {when})")
    order = {"running": 0, "stopped": 1, "done": 2}
    return sorted(found.values(), key=lambda training: (order[training.state], training.run))


def status_table(found: list[Training]) -> str:
    if not found:
        return "no training has started yet (nothing under results/checkpoints or results/models)"
    width = max(len(training.run) for training in found)
    return "\n".join(f"{training.state:<8} {training.run:<{width}}  {training.text}" for training in found)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="the run's results folder (default: %(default)s)")
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser(f"flowerlab {argv[0]}").parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: print(status_table(trainings(args.results))))

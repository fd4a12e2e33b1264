"""What every `flowerlab <command>` shares on the terminal: logging, progress bars, exit codes.

Nothing here imports TensorFlow, so a command that does not need it starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from flowerlab.errors import FlowerlabError

# When stderr is a log file, a progress line every half minute is plenty; on a terminal, redraw often.
LOG_PROGRESS_INTERVAL_S = 30.0


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: live on a terminal, a line every 30 s in a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.1 if interactive else LOG_PROGRESS_INTERVAL_S,
        dynamic_ncols=interactive,
        **kwargs,
    )


def duration(seconds: float) -> str:
    """A time as people say it in a progress line: '42 s', '7 min 30 s', '1 h 05 min'."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def configure_logging(verbose: bool = False) -> None:
    """Progress to stderr with timestamps (Snakemake sends stderr to the rule's log)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def usable_cpus() -> int:
    """The CPUs this process may run on, as the machine that runs the job sees it: its CPU
    affinity (what a cpuset or a batch system's cgroup allows), and no more than SLURM's CPUs
    per task where SLURM says (with `task/none` SLURM confines nothing itself). Never the CPU
    count of the host that parsed the workflow, which on a cluster is the login node."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if allocated.isdigit() and int(allocated) > 0:
        count = min(count, int(allocated))
    return max(1, count)


def thread_count(text: str) -> int:
    """argparse type of --threads: a positive integer, capped at the CPUs this job may use (a
    rule asks for its `threads`, and --cores may exceed the CPUs of a small machine)."""
    return min(positive_int(text), usable_cpus())


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message that names the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def run_command(command: str, work: Callable[[], object]) -> int:
    """Run one command's work; a FlowerlabError becomes one clear line on stderr and exit 1.

    Expected failures (bad input, offline, corrupt download) are the user's to fix and need a
    sentence, not a traceback; anything else is a bug and keeps its traceback.
    """
    try:
        work()
    except FlowerlabError as error:
        print(f"flowerlab {command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowerlab {command}: interrupted", file=sys.stderr)
        return 130
    return 0


"""Stopping a training on SIGTERM or Ctrl-C at a point where nothing is half done.

Snakemake and SLURM stop a job with SIGTERM and, about 30 s later, SIGKILL. Python's own way,
an exception raised by the signal handler, lands on whatever line runs when the signal comes:
inside a checkpoint's save, or inside TensorFlow's Python wrappers while they hold C++ objects
half made. While the image path's `fit` runs, a stop request therefore waits for the next
batch boundary (`callbacks.StopAtBatchBoundary` raises it there; a batch takes seconds at most);
everywhere else, and on a second signal, it is raised at once. Either way the training sees a
KeyboardInterrupt: its last complete checkpoint stays and the command ends with status 130.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether a stop was asked for, and whether it may wait for a batch boundary now."""

    def __init__(self) -> None:
        self.requested = False
        self.deferring = False

    def install(self) -> None:
        for signum in HANDLED:
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: Any) -> None:
        if self.deferring and not self.requested:
            self.requested = True  # raised by raise_if_requested at the next batch boundary
            return
        raise KeyboardInterrupt

    def raise_if_requested(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside: a stop waits for `raise_if_requested`. One still pending at the end is raised then."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        self.raise_if_requested()


# The process's one request: the signal handlers are process-wide, and `flowerlab train` runs one training.
STOP = StopRequest()

"""A benchmark side in a process of its own, with its own TensorFlow kernel settings.

TensorFlow reads its kernel library and allocator from the environment once, when it loads
(flowerlab.kernels), so two settings cannot be timed in one process. A child process is spawned
with the environment wanted, builds its side once (`factory(*args)` -> steps.Side), and then
times one round of steps each time the parent asks: the rounds of all sides still alternate, so
drifting load from other processes hits them alike, and only one side runs at a time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from steps import BenchSettings, Side, time_steps


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ replaced by `env` for the block (a spawned child inherits it), then restored."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kernel_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any kernel variable (the user's too), plus `variables`:
    a child's kernel setting is what a benchmark names, never what the parent happened to run."""
    from flowerlab import kernels

    env = {name: value for name, value in kernels.tensorflow_defaults_environment().items()
           if name not in kernels.RECORDED}
    return {**env, **variables}


class ChildSide:
    """The parent's handle on a side built and timed in a child process."""

    def __init__(self, name: str, env: Mapping[str, str], factory: Callable[..., Side], args: tuple[Any, ...],
                 settings: BenchSettings) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow loads anew
        self.connection, child = context.Pipe()
        with environment(env):
            self.process = context.Process(target=_serve, args=(child, factory, args, settings), daemon=True)
            self.process.start()
        child.close()
        self.info = self._receive()  # what the child built: parameters, FLOPs factor, kernel library
        self.side = Side(name, None, None, int(self.info["batch"]), time_round=self._round)
        self.settings = settings

    def _receive(self) -> dict[str, Any]:
        try:
            kind, payload = self.connection.recv()
        except EOFError:
            raise RuntimeError(f"the benchmark's child process died (exit code {self.process.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"in the benchmark's child process: {payload}")
        return payload

    def _round(self) -> float:
        self.connection.send("round")
        timed = self._receive()
        self.side.images += timed["images"]
        self.side.seconds += timed["seconds"]
        self.side.round_rates.append(timed["images"] / timed["seconds"])
        return self.side.round_rates[-1]

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.connection.send("stop")
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()


def _serve(connection: Any, factory: Callable[..., Side], args: tuple[Any, ...], settings: BenchSettings) -> None:
    """The child: configure threads, build the side, then time a round per request."""
    try:
        from flowerlab import devices, kernels
        from flowerlab.models.flops import training_flops_factor

        if settings.threads:
            devices.configure_threads(settings.threads)
        side = factory(*args)
        from flowerlab.models.build import count_parameters

        connection.send(("ready", {"batch": side.batch, "parameters": int(count_parameters(side.model)[0]),
                                   "flops_factor": training_flops_factor(side.model),
                                   "kernels": kernels.record()}))
    except Exception as error:  # reported to the parent, which raises it there
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    while connection.recv() == "round":
        images, seconds = side.images, side.seconds
        time_steps(side, warmup=settings.warmup, steps=settings.steps)
        connection.send(("timed", {"images": side.images - images, "seconds": side.seconds - seconds}))

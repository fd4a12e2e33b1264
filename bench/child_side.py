"""A benchmark side in a process of its own, with its own TensorFlow kernel settings.

TensorFlow reads its kernel library and allocator from the environment once, when it loads
(flowerlab.kernels), so two settings cannot be timed in one process. A child process is spawned
with the environment wanted, builds its side once (`factory(*args)` -> steps.Side), and then
times one round of steps each time the parent asks: the rounds of all sides still alternate, so
drifting load from other processes hits them alike, and only one side runs at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from steps import BenchSettings, Side, time_steps

# --cpu-kind avx2: an AVX2-only CPU's kernels, timed on a CPU with more (AVX-512, AMX). There
# TensorFlow's own default is Eigen (TF_ENABLE_ONEDNN_OPTS=0), whose code is compiled into the wheel
# and runs the same on every x86-64 CPU; oneDNN chooses its kernels at run time by the instructions
# it may use, which ONEDNN_MAX_CPU_ISA caps (oneDNN's CPU dispatcher control). Capped at AVX2 in
# every process, both sides run the kernels an AVX2-only CPU runs; the clock, caches and cores
# stay this CPU's, so a figure so measured names its CPU and "avx2 (emulated)".
CPU_KINDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # kind: (variables for every process, TensorFlow's default kernel variables on such a CPU)
    "native": ({}, {}),
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}
# The emulated kind's variables for every process and its TensorFlow defaults, which a child's
# own kernel setting overrides (kernel_environment); set by emulate_cpu_kind.
_emulated: dict[str, str] = {}


def add_cpu_kind_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu-kind", choices=list(CPU_KINDS), default="native",
                        help="avx2: the kernels and TensorFlow defaults of an AVX2-only CPU, on a CPU with "
                             "AVX-512 or AMX (default: this CPU's own)")


def emulate_cpu_kind(kind: str) -> None:
    """Run this process and every child it starts as on a CPU of `kind`; before TensorFlow loads."""
    if kind == "native":
        return
    if "tensorflow" in sys.modules:
        raise RuntimeError("--cpu-kind must take effect before TensorFlow loads, and it has loaded")
    os.environ.update(CPU_KINDS[kind][0])
    _emulated.update({**CPU_KINDS[kind][0], **CPU_KINDS[kind][1]})


def cpu_kind_label(kind: str) -> str:
    """The kind as results name it: "native", or "avx2 (emulated)"."""
    return kind if kind == "native" else f"{kind} (emulated)"


def float32_only(kind: str) -> bool:
    """Whether a run as `kind` keeps to float32: an AVX2-only CPU has no bfloat16 or float16
    instructions, and TensorFlow, seeing this CPU's own, would hand their work to the capped oneDNN,
    which crashes (a bfloat16 matmul on an AVX512-BF16 CPU did)."""
    return kind != "native"


def tensorflow_defaults(kind: str) -> dict[str, str]:
    """The kernel variables a process with TensorFlow's own defaults has on a CPU of `kind`."""
    return dict(CPU_KINDS[kind][1])


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
    """This process's environment without any kernel variable (the user's too), plus the emulated
    CPU kind's and `variables`: a child's kernel setting is what a benchmark names, never what the
    parent happened to run."""
    from flowerlab import kernels

    env = {name: value for name, value in kernels.tensorflow_defaults_environment().items()
           if name not in kernels.RECORDED}
    return {**env, **_emulated, **variables}


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
        from flowerlab.training.weight_gradients import layers

        if settings.threads:
            devices.configure_threads(settings.threads)
        side = factory(*args)
        from flowerlab.models.build import count_parameters

        connection.send(("ready", {"batch": side.batch, "parameters": int(count_parameters(side.model)[0]),
                                   "flops_factor": training_flops_factor(side.model),
                                   "kernels": kernels.record(),
                                   "flowerlab_weight_gradients": layers.routed_count(side.model)}))
    except Exception as error:  # reported to the parent, which raises it there
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    while connection.recv() == "round":
        images, seconds = side.images, side.seconds
        time_steps(side, warmup=settings.warmup, steps=settings.steps)
        connection.send(("timed", {"images": side.images - images, "seconds": side.seconds - seconds}))
